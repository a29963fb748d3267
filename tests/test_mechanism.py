"""The mechanism preset end to end: the run config's new fields (decay_subset, monitor_every),
the monitor's blocks in a run's history (training unchanged, resume exact), the claims'
rules on synthetic records (every verdict reachable), the figures and the report section,
the preset's plan and its budget."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from weightdecay.harness.build import RunSetupError, build_optimizer
from weightdecay.harness.config import RunConfig
from weightdecay.harness.models import build_model
from weightdecay.harness.monitoring import COLUMNS, monitor_rows, total_updates
from weightdecay.harness.presets import get_preset
from weightdecay.harness.spec import plan_sweep, with_seeds
from weightdecay.harness.train import run
from weightdecay.report import mechanism as M
from weightdecay.report.claims import Evidence
from weightdecay.report.model import build_report

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


# ----------------------------------------------------------------------------- config


def test_new_fields_are_checked_and_leave_existing_keys_unchanged():
    base = RunConfig()
    assert base.key() == "51a9f9c35e4ab70f"  # the key of every run planned before
    assert RunConfig(scale_invariant_only=True).key() == \
        RunConfig.from_dict({"scale_invariant_only": True}).key()
    a = RunConfig(decay_subset="not_scale_invariant")
    b = RunConfig(monitor_every=8)
    assert len({base.key(), a.key(), b.key()}) == 3
    assert RunConfig.from_dict(a.to_dict()) == a
    for bad, match in ((dict(decay_subset="scale_invariant"), "decay_subset"),
                       (dict(decay_subset="not_scale_invariant", scale_invariant_only=True),
                        "opposite"),
                       (dict(monitor_every=0), "monitor_every"),
                       (dict(monitor_every=2.0), "monitor_every"),
                       (dict(monitor_every=True), "monitor_every")):
        with pytest.raises(ValueError, match=match):
            RunConfig(**bad)


def test_decay_subset_groups_on_cnn1d_bn():
    torch.manual_seed(0)
    model = build_model("cnn1d_bn", input_shape=(1, 40), num_classes=10)
    x = torch.randn(32, 1, 40)
    convs = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv1d)}
    si = {f"{n}.weight" for n in convs}
    names = {id(p): n for n, p in model.named_parameters()}

    def decayed(cfg):
        opt = build_optimizer(cfg, model, example_input=x)
        return {names[id(p)] for g in opt.param_groups if g["weight_decay"] > 0
                for p in g["params"]}

    cfg = RunConfig(weight_decay=0.01)
    everything = set(names.values())
    assert decayed(cfg.replace(decay_subset="not_scale_invariant")) == everything - si
    assert decayed(cfg.replace(scale_invariant_only=True)) == si  # the opposite, unchanged
    assert decayed(cfg) == everything
    assert {"head.weight", "head.bias", "features.1.weight", "features.1.bias"} <= \
        everything - si
    with pytest.raises(RunSetupError, match="no weight of model"):
        build_optimizer(cfg.replace(model="mlp", decay_subset="not_scale_invariant"),
                        build_model("mlp", input_shape=(1, 40), num_classes=10),
                        example_input=x)


# ----------------------------------------------------------------------------- records

from test_train import TOY, _cfg, _same, _Stop, _stop_at  # noqa: E402  (the toy data set)


def test_monitor_blocks_leave_training_unchanged_and_resume_exactly(tmp_path):
    cfg = _cfg(model="cnn1d_bn", epochs=3, schedule="fixed")
    plain = run(cfg, data=TOY)
    full = run(cfg.replace(monitor_every=2), data=TOY)
    blocks = full["history"].pop("monitor")
    assert _same(plain, full)  # the monitor reads, never writes
    assert len(blocks) == 3 and set(blocks[0]["categories"]) == {
        "scale_invariant", "normalization", "other"}
    si = blocks[0]["categories"]["scale_invariant"]
    assert si["tensors"] == 3 and si["step"] == [2, 4, 6]
    assert set(si) == {"tensors", "numel", "step", *COLUMNS}
    rows = monitor_rows({"monitor": blocks}, "scale_invariant")
    assert [r["step"] for r in rows] == list(range(2, 19, 2)) and total_updates(
        {"monitor": blocks}) == 18
    assert all(r["predicted_angular_update"] > 0 and r["eta"] == 1.0 for r in rows)
    elapsed = [r["timescales_elapsed"] for r in rows]
    assert elapsed == sorted(elapsed) and elapsed[-1] == pytest.approx(2 * 0.01 * 18)
    # resume from epoch 2: the same blocks as the run without a break
    path = tmp_path / "ck.pt"
    with pytest.raises(_Stop):
        run(cfg.replace(monitor_every=2), checkpoint_path=path, data=TOY,
            on_epoch=_stop_at(2))
    resumed = run(cfg.replace(monitor_every=2), checkpoint_path=path, data=TOY)
    assert resumed["history"]["monitor"] == blocks
    # a checkpoint whose monitor state was tampered with is refused in one line
    from weightdecay.harness.checkpoint import CheckpointError

    bad = tmp_path / "bad.pt"
    with pytest.raises(_Stop):
        run(cfg.replace(monitor_every=2), checkpoint_path=bad, data=TOY, on_epoch=_stop_at(1))
    ck = torch.load(bad, weights_only=True)
    ck["history"]["monitor"][-1]["state"]["scale_invariant"] = ["no.such.weight"]
    torch.save(ck, bad)
    with pytest.raises(CheckpointError, match="monitor"):
        run(cfg.replace(monitor_every=2), checkpoint_path=bad, data=TOY)
    with pytest.raises(ValueError, match="equal"):
        monitor_rows({"monitor": [{"categories": {"other": {"step": [1]}}}]})


# ----------------------------------------------------------------------------- synthetic

N_TEST, T = 200, 320


def _record(optimizer, lr, wd, seed, *, convention="schedule", schedule="fixed", ratio=1.0,
            slope=None, grad_end=None, figure="equilibrium", n=0):
    """A monitored run whose scale-invariant rotation is ``ratio`` × the predicted one (times
    alpha**slope when given), and whose gradient norm ends ``grad_end`` × its middle value."""
    d = wd * (lr if convention == "lr" else 1.0)
    steps = list(range(8, T + 1, 8))
    eta = [1.0 if schedule == "fixed" else 0.5 * (1 + math.cos(math.pi * t / T)) for t in steps]
    pred = [math.sqrt(2 * d * e * 0.1 / 1.9) for e in eta]
    meas = [p * ratio * (lr ** slope if slope is not None else 1.0) for p in pred]
    grad = [grad_end if grad_end is not None and t > 0.9 * T else 1.0 for t in steps]
    cat = {"tensors": 3, "numel": 100, "step": steps, "angular_update": meas,
           "measured_angular_update": meas, "predicted_angular_update": pred,
           "norm": [1.0] * len(steps), "predicted_norm": [1.0] * len(steps),
           "grad_norm": grad, "eta": eta, "timescales_elapsed": [2 * d * t for t in steps]}
    other = dict(cat, predicted_angular_update=[None] * len(steps),
                 measured_angular_update=[None] * len(steps))
    hist = {"monitor": [{"categories": {"scale_invariant": cat, "other": other},
                         "state": {"step": T}}]}
    wrong = np.zeros(N_TEST, bool)
    from weightdecay.harness.vectors import pack_wrong
    return {**RunConfig(optimizer=optimizer, lr=lr, weight_decay=wd, seed=seed,
                        decay_convention=convention, schedule=schedule, monitor_every=8,
                        test_size=N_TEST).to_dict(),
            "experiment": figure, "figure": figure, "trial_number": n, "state": "COMPLETE",
            "diverged": False, "final_test_error": 0.0, "best_test_error": 0.0,
            "final_train_loss": 0.1, "wall_seconds": 1.0, "num_test": N_TEST,
            "final_test_wrong": pack_wrong(wrong), "history": hist}


def _eq_records(ratios, slope=None, convention="schedule", optimizer="adamw", seeds=(0, 1, 2)):
    """One setting per learning rate, each seed's ratio from ``ratios`` (per seed)."""
    out = []
    for lr in (2.0**-7, 2.0**-6, 2.0**-5, 2.0**-4):
        for s, r in zip(seeds, ratios):
            out.append(_record(optimizer, lr, 2.0**-7 if convention == "schedule" else 1.0, s,
                               convention=convention, ratio=r, slope=slope, n=len(out)))
    return out


def _claims(records, keys):
    ev = Evidence(records, n_boot=400)
    return {c.key: c for c in M.mechanism_claims(ev) if c.key in keys}


@pytest.mark.parametrize("ratios,verdict", [((0.98, 1.0, 1.03), "holds"),
                                            ((0.5, 0.55, 0.6), "refuted"),
                                            ((0.7, 1.0, 1.1), "inconclusive")])
def test_claim_a_equilibrium_rule(ratios, verdict):
    c = _claims(_eq_records(ratios), {"mech.equilibrium.adamw"})["mech.equilibrium.adamw"]
    assert c.verdict == verdict
    geo = math.exp(np.mean(np.log(ratios)))
    assert c.estimate.estimate == pytest.approx(geo, rel=1e-9)


@pytest.mark.parametrize("convention,slope,verdict", [
    ("schedule", None, "holds"), ("schedule", 0.5, "refuted"), ("lr", None, "holds"),
    ("lr", -0.5, "refuted"), ("schedule", "noisy", "inconclusive")])
def test_claim_b_convention_rule(convention, slope, verdict):
    if slope == "noisy":  # seeds disagree: slopes 0 and +0.6 both inside the interval
        recs = [r for s, sl in ((0, 0.0), (1, 0.6), (2, 0.3))
                for r in _eq_records((1.0,), slope=sl, seeds=(s,))]
    else:
        recs = _eq_records((1.0, 1.01, 0.99), slope=slope, convention=convention)
    key = f"mech.convention.adamw.{convention}"
    c = _claims(recs, {key})[key]
    assert c.verdict == verdict, c.line()
    expected = 0.5 if convention == "lr" else 0.0
    if slope not in (None, "noisy"):
        expected += slope
    if slope != "noisy":
        assert c.estimate.estimate == pytest.approx(expected, abs=0.02)


@pytest.mark.parametrize("paper,corrected,verdicts", [
    ((2.0, 2.2, 1.9), (1.0, 1.1, 0.95), ("holds", "holds")),
    ((0.6, 0.7, 0.65), (0.9, 1.0, 0.95), ("refuted", "refuted")),
    ((0.8, 1.6, 1.2), (0.8, 1.6, 1.2), ("inconclusive", "inconclusive"))])
def test_claim_d_gradient_norm_rule(paper, corrected, verdicts):
    recs = []
    for conv, ends in (("schedule", paper), ("corrected", corrected)):
        for lr in (2.0**-6, 2.0**-5):
            for s, g in enumerate(ends):
                recs.append(_record("adamw", lr, 2.0**-7, s, convention=conv,
                                    schedule="cosine", grad_end=g, n=len(recs)))
    cs = _claims(recs, {"mech.gradnorm.paper", "mech.gradnorm.corrected"})
    assert (cs["mech.gradnorm.paper"].verdict, cs["mech.gradnorm.corrected"].verdict) == verdicts
    assert cs["mech.gradnorm.paper"].estimate.estimate == pytest.approx(
        math.exp(np.mean(np.log(paper))), rel=1e-9)


from test_report import grid, rising, separable  # noqa: E402  (synthetic Fig. 2 surfaces)


def _subsets(all_surface, si_surface, not_si_surface, seed_noise=0.002):
    out = []
    for k, (name, surface) in enumerate((("all", all_surface), ("scale_invariant", si_surface),
                                         ("not_scale_invariant", not_si_surface))):
        for r in grid("adamw", surface, figure="decay_subsets", start=k * 10**4,
                      seed_noise=seed_noise, history=False):
            out.append(dict(r, **M.SUBSETS[name]))
    return out


def half(le, we):
    """best log2 λ = -6.5 + log2(α)/2 (slope +0.5, between the two subsets)."""
    return min(0.9, 0.02 + 0.004 * (we - 0.5 * le + 8) ** 2 + 0.001 * (le + 3) ** 2)


def test_claim_c_subset_rules():
    keys = {"mech.subsets.not_si", "mech.subsets.si", "mech.subsets.lower",
            "mech.subsets.higher", "mech.subsets.edge"}
    cs = _claims(_subsets(half, separable, rising), keys)
    assert {k: c.verdict for k, c in cs.items()} == dict.fromkeys(keys, "holds")
    assert cs["mech.subsets.not_si"].estimate.estimate == pytest.approx(1.0, abs=0.2)
    # the upper edge (2x the row's best) of a bowl whose centre moves as alpha (its width
    # shrinks a little as the row's best error rises: a slope somewhat below 1)
    assert 0.7 < cs["mech.subsets.edge"].estimate.estimate < 1.1
    # the opposite world: decaying the non-invariant part gives no rise, the invariant part
    # does (every rule refuted)
    cs = _claims(_subsets(half, rising, separable), keys)
    assert {k: c.verdict for k, c in cs.items()} == dict.fromkeys(keys, "refuted")
    assert cs["mech.subsets.si"].reading == "rises with α"


def test_not_run_without_mechanism_records():
    cs = M.mechanism_claims(Evidence([], n_boot=10))
    assert len(cs) == 13 and {c.verdict for c in cs} == {"not run"}
    assert all("--preset mechanism" in c.detail for c in cs)


def test_report_section_and_figures(tmp_path):
    from weightdecay.report import figures as F
    from weightdecay.report.html import write_html

    recs = _eq_records((0.98, 1.0, 1.02)) + _eq_records((1.0, 1.0, 1.01), convention="lr")
    for conv in ("schedule", "corrected"):
        for s in range(3):
            recs.append(_record("adamw", 2.0**-5, 2.0**-7, s, convention=conv,
                                schedule="cosine", grad_end=2.0 if conv == "schedule" else 1.0,
                                n=len(recs)))
    recs += _subsets(half, separable, rising)
    rep = build_report(recs, n_boot=200)
    names = ("equilibrium", "rotation", "gradnorm", "decay_subsets")
    assert set(names) <= set(rep.figures)
    assert len(rep.mechanism) == 4 + 4 + 2
    row = next(r for r in rep.mechanism if r.decay_convention == "lr")
    assert row.ratio is not None and row.ratio.contains(1.0) and row.window[1] == T
    text = write_html(rep, tmp_path).read_text()  # draws every figure (a failure is listed)
    assert "Figures not drawn" not in text and "measured ÷ predicted" in text
    assert all((tmp_path / f"{n}.png").stat().st_size > 10_000 for n in names)
    with pytest.raises(ValueError, match="decay_subsets"):
        F.fig_decay_subsets(recs[:3])
    stats = json.loads(json.dumps(rep.to_dict()))
    assert len(stats["mechanism"]["rows"]) == 10 and "decay_subsets" in stats
    verdicts = {c["key"]: c["verdict"] for c in stats["scorecard"]}
    assert verdicts["mech.equilibrium.adamw"] == "holds"
    assert verdicts["mech.gradnorm.paper"] == "holds"
    assert verdicts["mech.convention.adamw.lr"] == "holds"


# ----------------------------------------------------------------------------- the preset


def test_mechanism_preset_plans_within_its_budget():
    plan = plan_sweep(get_preset("mechanism"), max_runs=None)
    seeds = {r.config.seed for r in plan.runs}
    assert seeds == {0, 1, 2}
    tags = {r.figure for r in plan.runs}
    assert tags == {"equilibrium", "decay_subsets"}
    monitored = [r for r in plan.runs if r.config.monitor_every is not None]
    assert monitored and all(r.figure == "equilibrium" for r in monitored)
    # the budget: runs x the per-run CPU time measured on the pilot (committed), on 2 cores
    pilot = json.loads((ROOT / "docs/results/pilot_mechanism.json").read_text())
    cost = pilot["cost"]["cpu_seconds_per_run"]
    assert len(plan.runs) * cost / 2 <= 30 * 60 * 0.8  # 20 % left for the report and waits
    rep = with_seeds(get_preset("mechanism"), [100, 101, 102])
    assert rep.name == "mechanism-seeds-100-101-102" and len(rep.runs) == len(plan.runs)
    assert not {r.config.seed for r in rep.runs} & (seeds | {1000, 1001})


def test_publish_copies_the_mechanism_files_and_check_ignores_claims_added_since(tmp_path):
    from test_publish import _stats
    from weightdecay.report import publish

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stats = _stats()
    stats["mechanism"] = {"rows": [{"optimizer": "adamw"}], "markdown": "| mechanism table |"}
    (run_dir / "stats.json").write_text(json.dumps(stats))
    for name in ("equilibrium", "decay_subsets"):
        (run_dir / f"{name}.png").write_bytes(b"png")
    publish.write(run_dir, "mechanism", tmp_path / "results", None)
    assert (tmp_path / "results" / "mechanism-decay_subsets.png").read_bytes() == b"png"
    assert "| mechanism table |" in (tmp_path / "results" / "mechanism.md").read_text()
    assert json.loads((tmp_path / "results" / "mechanism.json").read_text())["mechanism"]
    # a reference written before a claim existed: the fresh run's "not run" is no difference,
    # a fresh verdict is
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps(_stats()))
    added = {"key": "mech.x", "verdict": "not run", "estimate": None}
    (run_dir / "stats.json").write_text(json.dumps(
        {**stats, "scorecard": [*stats["scorecard"], added]}))
    assert publish.check(run_dir, ref) == []
    (run_dir / "stats.json").write_text(json.dumps(
        {**stats, "scorecard": [*stats["scorecard"], dict(added, verdict="holds")]}))
    assert publish.check(run_dir, ref) == ["mech.x: only in the fresh run"]
