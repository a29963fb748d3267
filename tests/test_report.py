"""Tests of weightdecay.report: bootstrap, statistics, the scorecard, figures and
report.html, from synthetic records that follow the store contract.

Synthetic error surfaces with a known optimum: an L2-like *diagonal valley* (best λ ∝ 1/α,
Prop. 1 of Loshchilov & Hutter 2019: slope −1), a *separable basin* (slope 0) and a basin
whose optimum *rises* with α (slope +1). Each run gets a per-example test vector drawn from
its cell's error rate, so the bootstrap over seeds and test examples is exercised as on
real stores.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from weightdecay.api import write_report
from weightdecay.harness.vectors import pack_wrong, unpack_wrong
from weightdecay.report import curves as C
from weightdecay.report import figures as F
from weightdecay.report.claims import Evidence, scorecard
from weightdecay.report.model import Replication
from weightdecay.report.resample import Replicates
from weightdecay.report.stats import (
    SLOPE_READINGS,
    Interval,
    heat_map,
    interval,
    row_optima,
    slope_fit,
    slope_reading,
)

N_TEST = 4000
LR_EXP = list(range(-6, 0))  # α = 2^-6 .. 2^-1 (32×)
LAM_EXP = list(range(-13, -3))  # λ = 2^-13 .. 2^-4


def valley(le, we):
    """best log2 λ = -10 - log2 α (slope −1)."""
    return min(0.9, 0.02 + 0.004 * (le + we + 10) ** 2 + 0.001 * (le + 3) ** 2)


def separable(le, we):
    """best λ = 2^-8 whatever α (slope 0)."""
    return min(0.9, 0.02 + 0.004 * (we + 8) ** 2 + 0.001 * (le + 3) ** 2)


def rising(le, we):
    """best log2 λ = -5 + log2 α (slope +1)."""
    return min(0.9, 0.02 + 0.004 * (we - le + 5) ** 2 + 0.001 * (le + 3) ** 2)


def curve(final, epochs, start=0.85):
    return [final + (start - final) * math.exp(-e / 4) for e in range(1, epochs + 1)]


def make_record(optimizer, lr, wd, err, *, seed=0, figure="fig2", schedule="cosine",
                epochs=10, diverged=False, state="COMPLETE", wd_norm=None, T_0=None, n=0,
                rng=None, convention="schedule", history=True):
    rng = rng if rng is not None else np.random.default_rng(n)
    wrong = rng.random(N_TEST) < err
    final = float("nan") if diverged else float(wrong.mean())
    r = {
        "dataset": "mnist1d", "model": "cnn1d_bn", "optimizer": optimizer, "lr": lr,
        "weight_decay": wd, "weight_decay_norm": wd_norm, "decay_convention": convention,
        "schedule": schedule, "T_0": T_0, "T_mult": 2.0, "milestones": None,
        "drop_factor": 0.1, "epochs": epochs, "batch_size": 128, "seed": seed,
        "device": "cpu", "momentum": 0.9, "decay_all": True, "width": None,
        "test_size": N_TEST, "eval_every": 1, "cautious": False, "l1": 0.0,
        "scale_invariant_only": False, "compile": True, "source_hash": None,
        "decay_subset": None, "monitor_every": None,
        "experiment": figure, "figure": figure,
        "trial_number": n, "state": state, "diverged": diverged,
        "final_test_error": final, "best_test_error": final,
        "final_train_loss": float("nan") if diverged else 2.0 * err ** 2,
        "wall_seconds": 1.0, "num_test": N_TEST,
        "final_test_wrong": None if diverged else pack_wrong(wrong), "history": {},
    }
    if history and not diverged and state == "COMPLETE":
        te = curve(final, epochs)
        eta = [0.5 * (1 + math.cos(math.pi * e / epochs)) for e in range(1, epochs + 1)]
        if schedule == "restarts":
            eta, t, length = [], 0.0, float(T_0)
            for e in range(1, epochs + 1):
                while e > t + length + 1e-9:
                    t, length = t + length, length * 2
                eta.append(0.5 * (1 + math.cos(math.pi * (e - t) / length)))
            te = [final + (x - final) * (0.3 + 0.7 * h) for x, h in zip(te, eta)]
        te[-1] = final
        vecs = [pack_wrong(rng.random(N_TEST) < x) for x in te[:-1]] + [r["final_test_wrong"]]
        te = [unpack_wrong(v, N_TEST).mean() for v in vecs]
        r["history"] = {"epoch": list(range(1, epochs + 1)),
                        "train_loss": [2.0 * x ** 2 for x in te], "test_error": te,
                        "weight_norm": [10.0] * epochs, "eta": eta,
                        "effective_decay": [h * wd for h in eta], "test_wrong": vecs}
    return r


def grid(optimizer, surface, *, seeds=(0, 1, 2), figure="fig2", diverge=(), lam=LAM_EXP,
         start=0, seed_noise=0.002, **kw):
    """Records over LR_EXP × lam; cells in ``diverge`` (exponent pairs) diverge."""
    out = []
    rng = np.random.default_rng(start + 17)
    for le in LR_EXP:
        for we in lam:
            for s in seeds:
                err = min(0.95, max(0.001, surface(le, we) + seed_noise * rng.normal()))
                out.append(make_record(optimizer, 2.0 ** le, 2.0 ** we, err, seed=s,
                                       figure=figure, diverged=(le, we) in diverge,
                                       n=start + len(out), rng=rng, **kw))
    return out


def fig2_records(adamw=separable):
    div = {(-1, -13), (-1, -12)}
    return (grid("sgd", valley, diverge=div) + grid("adam", valley, diverge=div, start=10**4)
            + grid("sgdw", separable, start=2 * 10**4) + grid("adamw", adamw, start=3 * 10**4))


@pytest.fixture(scope="module")
def fig2_ev():
    return Evidence(fig2_records(), n_boot=300)


# ----------------------------------------------------------------------------- resample


def test_replicate_zero_is_the_data_and_test_resampling_has_binomial_spread():
    rng = np.random.default_rng(0)
    recs = [make_record("sgdw", 0.1, 0.01, 0.2, seed=0, rng=rng, history=False)]
    reps = Replicates(recs, n_boot=2000)
    e = reps.errors()
    assert e[0, 0] == recs[0]["final_test_error"]
    p = e[0, 0]
    assert np.std(e[1:, 0]) == pytest.approx(math.sqrt(p * (1 - p) / N_TEST), rel=0.1)
    assert np.mean(e[1:, 0]) == pytest.approx(p, abs=0.002)
    assert (reps.seed_counts.sum(axis=1) == 1).all() and reps.paired


def test_identical_runs_stay_paired_and_missing_vectors_keep_their_error():
    rng = np.random.default_rng(1)
    a = make_record("sgdw", 0.1, 0.01, 0.3, seed=0, rng=rng, history=False)
    b = dict(a, weight_decay=0.02, trial_number=1)
    c = dict(a, weight_decay=0.04, trial_number=2, final_test_wrong=None,
             final_test_error=0.25)
    reps = Replicates([a, b, c], n_boot=200)
    e = reps.errors()
    assert np.array_equal(e[:, 0], e[:, 1])  # the same test draws for every run
    assert (e[:, 2] == 0.25).all() and not reps.paired


@pytest.mark.parametrize("errs", [(0.10, 0.14), (0.10, 0.14, 0.11), (0.2, 0.9, 0.3, 0.25)])
def test_seed_resampling_has_an_unbiased_variance_and_stays_in_bounds(errs):
    # no test noise (vectors absent): the bootstrap variance of the seed mean must be the
    # usual s^2 / S, not the plug-in (S-1)/S * s^2 / S, and every value an observed one
    S = len(errs)
    recs = [make_record("sgdw", 0.1, 0.01, 0.1, seed=s, n=s, history=False)
            for s in range(S)]
    for r, err in zip(recs, errs):  # no test sample to resample: seeds only
        r["final_test_wrong"], r["final_test_error"], r["num_test"] = None, err, None
    reps = Replicates(recs, n_boot=40000)
    m = reps.mean(list(range(S)))
    assert m[0] == pytest.approx(np.mean(errs))
    assert np.var(m[1:]) == pytest.approx(np.var(errs, ddof=1) / S, rel=0.05)
    assert m[1:].min() >= min(errs) and m[1:].max() <= max(errs)


def test_a_diverged_run_makes_its_setting_nan():
    rng = np.random.default_rng(2)
    recs = [make_record("sgdw", 0.1, 0.01, 0.1, seed=0, rng=rng, history=False),
            make_record("sgdw", 0.1, 0.01, 0.1, seed=1, rng=rng, history=False,
                        diverged=True)]
    reps = Replicates(recs, n_boot=50)
    assert np.isnan(reps.mean([0, 1])[0])
    with pytest.raises(ValueError, match="different sizes"):
        Replicates([recs[0], dict(recs[0], num_test=10)])
    with pytest.raises(ValueError, match="n_boot"):
        Replicates(recs, n_boot=0)


# ----------------------------------------------------------------------------- stats


def test_heat_map_means_ses_and_refuses_mixed_settings(fig2_ev):
    hm = fig2_ev.heat_map("fig2", optimizer="sgdw")
    assert hm.mean.shape == (len(LR_EXP), len(LAM_EXP)) and (hm.counts == 3).all()
    i, j = LR_EXP.index(-3), LAM_EXP.index(-8)
    assert hm.mean[i, j] == pytest.approx(separable(-3, -8), abs=0.006)
    # SE of a 3-seed mean at ~2 % error on 4000 examples: binomial and seed parts
    assert 0.001 < hm.se[i, j] < 0.006
    sgd = fig2_ev.heat_map("fig2", optimizer="sgd")
    assert sgd.diverged.sum() == 2 and np.isnan(sgd.mean[sgd.diverged]).all()
    assert hm.top_k(3)[0] == tuple(int(x) for x in np.unravel_index(np.nanargmin(hm.mean),
                                                                      hm.mean.shape))
    with pytest.raises(ValueError, match="optimizer"):
        heat_map(fig2_ev.reps("fig2"))


@pytest.mark.parametrize("surface,true_slope", [(valley, -1.0), (separable, 0.0),
                                                (rising, 1.0)])
def test_row_optima_and_slope_recover_the_true_optimum(surface, true_slope):
    ev = Evidence(grid("sgdw", surface), n_boot=200)
    hm = ev.heat_map("fig2", optimizer="sgdw")
    log_lam, edge = row_optima(hm)
    truth = {valley: lambda le: -10 - le, separable: lambda le: -8,
             rising: lambda le: -5 + le}[surface]
    used = np.isfinite(log_lam[0])
    assert used.sum() >= 4
    for i in np.flatnonzero(used):
        assert abs(log_lam[0, i] / math.log(2) - truth(LR_EXP[i])) < 0.5  # within half a step
    fit = slope_fit(hm)
    assert fit.slope.contains(true_slope) and fit.slope.hi - fit.slope.lo < 0.6
    expected = {-1.0: "L2 valley", 0.0: "separable", 1.0: "rises with α"}[true_slope]
    assert fit.reading == expected


def test_rows_outside_the_basin_or_at_the_edge_are_left_out():
    # a valley whose optimum leaves the grid for the two largest α, and a smallest-α row
    # that trains badly everywhere
    def surf(le, we):
        base = valley(le, we + 5)  # best log2 λ = -15 - log2 α
        return base + (0.2 if le == -6 else 0.0)
    hm = Evidence(grid("sgd", surf), n_boot=50).heat_map("fig2", optimizer="sgd")
    log_lam, edge = row_optima(hm)
    assert edge[0, LR_EXP.index(-1)] and edge[0, LR_EXP.index(-2)]
    assert np.isnan(log_lam[0, LR_EXP.index(-6)]) and not edge[0, LR_EXP.index(-6)]


@pytest.mark.parametrize("lo,hi,reading", [
    (-1.3, -0.7, "L2 valley"), (-0.4, 0.3, "separable"), (0.1, 0.9, "rises with α"),
    (-0.9, -0.2, "partly coupled"), (-2.0, -1.2, "steeper than L2"),
    (-1.5, 0.4, "inconclusive"), (float("nan"), float("nan"), "insufficient data"),
])
def test_slope_readings_follow_their_rules(lo, hi, reading):
    assert slope_reading(Interval((lo + hi) / 2, lo, hi)) == reading
    assert reading in SLOPE_READINGS


def test_interval_is_undefined_when_most_replicates_are():
    vals = np.r_[0.5, np.full(10, np.nan), np.ones(5)]
    ci = interval(vals)
    assert ci.estimate == 0.5 and not ci.finite and "undefined" in ci.format()
    ci = interval(np.r_[0.0, np.linspace(-1, 1, 1001)])
    assert ci.lo == pytest.approx(-0.9) and ci.hi == pytest.approx(0.9)


# ----------------------------------------------------------------------------- scorecard


def test_scorecard_reads_the_synthetic_fig2(fig2_ev):
    claims = {c.key: c for c in scorecard(fig2_ev.records, evidence=fig2_ev,
                                           equivalence=False)}
    assert claims["fig2.sgd"].verdict == "holds" and claims["fig2.adam"].verdict == "holds"
    assert claims["fig2.sgdw"].verdict == "holds" and claims["fig2.adamw"].verdict == "holds"
    assert claims["delta.sgd"].verdict == "holds" and claims["delta.sgd"].estimate.contains(-1)
    for key in ("fig1.adam", "fig3", "supp3.raw", "fig4.adamw", "conv.sgdw"):
        assert claims[key].verdict == "not run"
    assert "L2 valley" in claims["fig2.sgd"].detail


def test_scorecard_refutes_a_rising_decoupled_optimum():
    ev = Evidence(fig2_records(adamw=rising), n_boot=200)
    claims = {c.key: c for c in scorecard(ev.records, evidence=ev, equivalence=False)}
    assert claims["fig2.adamw"].verdict == "refuted"
    assert claims["fig2.adamw"].estimate.lo > 0
    assert claims["delta.adam"].verdict == "holds"  # −1 − (+1): still below 0


def test_best_error_claim_uses_paired_bootstrap():
    recs = (grid("adam", lambda le, we: separable(le, we) + 0.01, start=1)
            + grid("adamw", separable, start=2))
    claims = {c.key: c for c in scorecard(recs, n_boot=200, equivalence=False)}
    c = claims["best.adamw_adam"]
    assert c.verdict == "holds" and c.estimate.hi < 0 and "%" in c.estimate_text()


def test_exact_equivalence_of_prop1_and_not_prop2():
    from weightdecay.report.claims import exact_equivalence

    gaps = exact_equivalence(steps=50)
    assert gaps["sgd_vs_sgdw"] < 1e-12 and gaps["adam_vs_adamw"] > 1e-2


def test_curve_claims_fig3_fig4_and_supp3():
    out = []
    rng = np.random.default_rng(5)
    for opt, base in (("adam", 0.06), ("adamw", 0.04)):  # AdamW lower at equal loss
        for we in (-12, -10, -8, -6):
            for s in (0, 1):
                err = base + 0.004 * abs(we + 8)
                r = make_record(opt, 2**-6, 2.0**we, err, seed=s, figure="fig3", epochs=6,
                                rng=rng, n=len(out))
                r["final_train_loss"] = 0.01 * (1 + abs(we + 8))
                out.append(r)
    for opt, sched, base in (("adamw", "cosine", 0.05), ("adamw", "restarts", 0.05)):
        for s in (0, 1):
            out.append(make_record(opt, 2**-6, 2**-8, base, figure="fig4", schedule=sched,
                                   epochs=14, T_0=2 if sched == "restarts" else None, seed=s,
                                   rng=rng, n=len(out)))
    for T, shift in ((5, 0), (10, 0.5), (20, 1.0)):  # raw optimum ∝ T^-0.5 in log2 units
        out += grid("adamw", lambda le, we, sh=shift: separable(le, we + sh), figure="supp3",
                    epochs=T, seeds=(0, 1), start=len(out), history=False)
        out += [dict(r, weight_decay_norm=r["weight_decay"] * 8, weight_decay=0.0)
                for r in grid("adamw", separable, figure="supp3", epochs=T, seeds=(0, 1),
                              start=len(out) + 5000, history=False)]
    claims = {c.key: c for c in scorecard(out, n_boot=200, equivalence=False)}
    assert claims["fig3"].verdict == "holds", claims["fig3"].estimate
    assert claims["fig4.adamw"].verdict == "holds"  # restarts are lower at epochs 2, 6
    assert claims["supp3.raw"].verdict == "holds" and claims["supp3.raw"].estimate.contains(-0.5)
    assert claims["supp3.norm"].verdict == "holds"


# ----------------------------------------------------------------------------- figures


def _titles(fig):
    return [ax.get_title() for ax in fig.axes if ax.get_label() != "<colorbar>"]


def test_fig2_panels_show_slopes_and_readings(fig2_ev):
    fig = F.fig2(fig2_ev)
    titles = _titles(fig)
    assert any(t.startswith("SGD\nslope") and "L2 valley" in t for t in titles)
    assert any(t.startswith("SGDW\nslope") and "separable" in t for t in titles)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "div" in texts and any("±" in t for t in texts)
    fig = F.fig_slopes(fig2_ev)
    labels = [t.get_text() for ax in fig.axes if ax.get_legend() for t in
              ax.get_legend().get_texts()]
    assert any(lbl.startswith("SGD: s = ") for lbl in labels)


def test_fig1_fig3_fig4_supp1_supp3_draw():
    out = []
    for sched in ("fixed", "step", "cosine"):
        out += grid("adam", valley, seeds=(0,), figure="fig1", schedule=sched,
                    start=len(out), history=False)
        out += grid("adamw", separable, seeds=(0,), figure="fig1", schedule=sched,
                    start=len(out) + 7000, history=False)
    assert len(_titles(F.fig1(out))) == 6
    with pytest.raises(ValueError, match="fig3 needs"):
        C.fig3(out)
    long = [make_record(o, 1e-3, 2.0**we, 0.05, figure="fig3", epochs=8, n=i * 10 + we + 20)
            for i, o in enumerate(("adam", "adamw")) for we in (-10, -8)]
    assert len(_titles(C.fig3(long))) == 4
    f4 = [make_record("adamw", 1e-3, 1e-3, 0.05, figure="fig4", schedule=s, epochs=14,
                      T_0=2 if s == "restarts" else None, n=k)
          for k, s in enumerate(("cosine", "restarts"))]
    legend = [t.get_text() for t in C.fig4(f4).axes[0].get_legend().get_texts()]
    assert any(t.startswith("AdamWR") for t in legend) and any(t.startswith("AdamW ")
                                                             for t in legend)
    assert C.supp1(None, T_0=1, T_mult=2).axes
    s3 = []
    for T in (5, 10):
        s3 += grid("adamw", separable, figure="supp3", epochs=T, seeds=(0,), start=len(s3),
                   history=False)
    assert len(_titles(F.supp3(s3))) == 2


# ----------------------------------------------------------------------------- html


def test_write_report_opens_with_the_scorecard(tmp_path, fig2_ev):
    recs = [dict(r) for r in fig2_ev.records]
    recs[0]["optimizer"] = "sgd"
    spec = {"name": "<script>alert(1)</script>"}
    path = write_report(recs, tmp_path, spec=spec, n_boot=100)
    text = path.read_text(encoding="utf-8")
    assert text.index("Claims scorecard") < text.index("<h2 id='fig2'>")
    assert "<script>" not in text and "&lt;script&gt;" in text
    for name in ("fig2.png", "slopes.png", "supp1.png"):
        assert (tmp_path / name).exists()
    stats = json.loads((tmp_path / "stats.json").read_text())
    keys = {c["key"]: c["verdict"] for c in stats["scorecard"]}
    assert keys["fig2.sgd"] == "holds" and keys["fig1.adam"] == "not run"
    assert stats["fig2"]["optimizer=sgd (λ)"]["slope"]["reading"] in SLOPE_READINGS
    assert "± " in text and "L2 valley" in text


def test_replication_compares_verdicts(tmp_path, fig2_ev):
    claims = scorecard(fig2_ev.records, evidence=fig2_ev, equivalence=False)
    orig = {"scorecard": [dict(c.to_dict(), verdict="refuted") if c.key == "fig2.sgd"
                          else c.to_dict() for c in claims]}
    rep = Replication.compare(claims, orig)
    assert rep.differ == ["fig2.sgd"] and rep.replicated == rep.compared - 1
    assert Replication.from_dict(rep.to_dict()) == rep
    text = write_report(fig2_ev.records, tmp_path, n_boot=50, original=orig).read_text()
    assert f"Replication on other seeds:</b> {rep.sentence()}" in text and "fig2.sgd" in text


def test_write_report_lists_figures_it_cannot_draw(tmp_path):
    recs = [make_record("adamw", 1e-3, 1e-4, 0.1, state="RUNNING", figure="fig2")]
    text = write_report(recs, tmp_path, n_boot=20).read_text(encoding="utf-8")
    assert "Figures not drawn" in text and "fig2 needs" in text
    assert (tmp_path / "supp1.png").exists() and not (tmp_path / "fig2.png").exists()
    with pytest.raises(ValueError, match="records must be"):
        write_report({"a": 1}, tmp_path)


def test_records_from_the_store_feed_the_report(tmp_path):
    """Contract check: trials written the way the worker writes them, read by load_records."""
    optuna = pytest.importorskip("optuna")
    from weightdecay.harness import store
    from weightdecay.harness.config import RunConfig

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=url, study_name="demo")
    recs = grid("sgd", valley, seeds=(0, 1)) + grid("sgdw", separable, seeds=(0, 1),
                                                    start=999)
    for n, r in enumerate(recs):
        attrs = {name: r[name] for name in ("history", "final_test_error", "best_test_error",
                                            "final_train_loss", "diverged", "wall_seconds",
                                            "num_test", "final_test_wrong")}
        attrs.update(config={k: r[k] for k in RunConfig.field_names()}, experiment="fig2",
                     figure="fig2", key=f"k{n}")
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE, value=0.0, user_attrs=attrs))
    loaded = store.load_records(url, "demo")
    assert len(loaded) == len(recs)
    claims = {c.key: c for c in scorecard(loaded, n_boot=100, equivalence=False)}
    assert claims["fig2.sgd"].verdict == "holds" and claims["delta.sgd"].verdict == "holds"


def test_variants_are_ranked_with_paired_differences(tmp_path):
    from weightdecay.report.variants import markdown, variant_table

    recs = (grid("adamw", separable, figure="variants", seeds=(0, 1))
            + [dict(r, decay_convention="lr") for r in
               grid("adamw", lambda le, we: separable(le, we) + 0.01, figure="variants",
                    seeds=(0, 1), start=5000)]
            + [dict(r, cautious=True) for r in
               grid("adamw", rising, figure="variants", seeds=(0, 1), start=9000)])
    ev = Evidence(recs, n_boot=200)
    rows = variant_table(ev)
    assert [r.name for r in rows][-1] == "torch (lr_t·λ)"  # 1 point worse: ranked last
    paper = next(r for r in rows if r.name == "paper (η_t·λ)")
    torch_row = next(r for r in rows if r.name.startswith("torch"))
    assert paper.vs_paper is None and torch_row.vs_paper.lo > 0
    assert next(r for r in rows if r.name.startswith("cautious")).slope.reading == "rises with α"
    assert "| AdamW | paper (η_t·λ) |" in markdown(rows)
    assert "worse: “torch (lr_t·λ)”" in markdown(rows)  # the data's own sentence
    text = write_report(recs, tmp_path, n_boot=50).read_text()
    assert (tmp_path / "variants.png").exists() and "Decay variants" in text
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert len(stats["variants"]["rows"]) == 3
