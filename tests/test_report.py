"""Tests of weightdecay.report: statistics, figures and report.html from synthetic records.

The records follow the store contract (one dict per trial). Two synthetic error surfaces:
an L2-like *diagonal valley* (best λ ∝ 1/α, Prop. 1 of Loshchilov & Hutter 2019) and a
*separable basin* (best λ independent of α, decoupled decay).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from weightdecay.report import figures as F
from weightdecay.report.html import write_report
from weightdecay.report.stats import (
    best_cell,
    best_lambda_by_budget,
    budget_shift,
    decoupling_statistic,
    heatmap_table,
    top_k_cells,
)

LR_EXP = list(range(-6, 0))  # α = 2^-6 .. 2^-1  (32× range)
LAM_EXP = list(range(-12, -2))  # λ = 2^-12 .. 2^-3


def diagonal(le: float, we: float) -> float:
    """L2-like valley: best log2 λ = -9 - log2 α (moves one-for-one with α)."""
    return min(0.9, 0.08 + 0.012 * (le + we + 9) ** 2 + 0.004 * (le + 3) ** 2)


def separable(le: float, we: float) -> float:
    """Decoupled basin: best λ = 2^-7 whatever α."""
    return 0.07 + 0.01 * (we + 7) ** 2 + 0.006 * (le + 4) ** 2


def curve(final: float, epochs: int, start: float = 0.85) -> list[float]:
    return [final + (start - final) * math.exp(-e / 4) for e in range(1, epochs + 1)]


def make_record(optimizer, lr, wd, err, *, seed=0, figure="fig2", schedule="cosine",
                epochs=20, diverged=False, state="COMPLETE", wd_norm=None, T_0=None, n=None,
                history=True):
    r = {
        "dataset": "mnist1d", "model": "cnn1d_bn", "optimizer": optimizer, "lr": lr,
        "weight_decay": wd, "weight_decay_norm": wd_norm, "decay_convention": "schedule",
        "schedule": schedule, "T_0": T_0, "T_mult": 2.0, "milestones": None,
        "drop_factor": 0.1, "epochs": epochs, "batch_size": 128, "seed": seed,
        "device": "cpu", "momentum": 0.9, "experiment": figure, "figure": figure,
        "trial_number": n if n is not None else seed, "state": state, "diverged": diverged,
        "final_test_error": float("nan") if diverged else err,
        "best_test_error": float("nan") if diverged else err * 0.98,
        "final_train_loss": float("nan") if diverged else 2.0 * err ** 2,
        "wall_seconds": 1.0, "history": {},
    }
    if history and not diverged and state == "COMPLETE":
        te = curve(err, epochs)
        eta = [0.5 * (1 + math.cos(math.pi * e / epochs)) for e in range(1, epochs + 1)]
        if schedule == "restarts":
            eta, t, length = [], 0.0, float(T_0)
            for e in range(1, epochs + 1):
                while e > t + length + 1e-9:
                    t, length = t + length, length * 2
                eta.append(0.5 * (1 + math.cos(math.pi * (e - t) / length)))
            te = [err + (x - err) * (0.3 + 0.7 * h) for x, h in zip(te, eta)]
        r["history"] = {
            "epoch": list(range(1, epochs + 1)),
            "train_loss": [2.0 * x ** 2 for x in te],
            "test_error": te,
            "weight_norm": [10.0] * epochs,
            "eta": eta,
            "effective_decay": [h * wd for h in eta],
        }
    return r


def grid(optimizer, surface, *, seeds=(0, 1), figure="fig2", diverge=(), noise=0.002,
         **kw):
    """Records over LR_EXP × LAM_EXP; cells in ``diverge`` (exponent pairs) diverge."""
    out = []
    for le in LR_EXP:
        for we in LAM_EXP:
            for s in seeds:
                err = surface(le, we) + noise * (1 if s % 2 else -1)
                out.append(make_record(optimizer, 2.0 ** le, 2.0 ** we, err, seed=s,
                                       figure=figure, diverged=(le, we) in diverge,
                                       n=len(out), **kw))
    return out


def fig2_records():
    div = {(-1, -12), (-1, -11), (-2, -12)}  # large α, tiny λ: blow-up corner
    return (grid("sgd", diagonal, diverge=div) + grid("adam", diagonal, diverge=div)
            + grid("sgdw", separable) + grid("adamw", separable))


def supp3_records():
    """Raw λ optimum ∝ 1/√T (moves with the budget); λ_norm optimum fixed at 2^-5."""
    out = []
    for epochs, shift in ((10, 0), (40, 1), (160, 2)):
        for le in (-5, -4, -3):
            for we in range(-11, -3):
                raw = 0.08 + 0.01 * (we + 6 + shift) ** 2 + 0.005 * (le + 4) ** 2
                out.append(make_record("adamw", 2.0 ** le, 2.0 ** we, raw, figure="supp3",
                                       epochs=epochs, history=False, n=len(out)))
                norm = 0.08 + 0.01 * (we + 7) ** 2 + 0.005 * (le + 4) ** 2
                out.append(make_record("adamw", 2.0 ** le, 0.0, norm, figure="supp3",
                                       epochs=epochs, wd_norm=2.0 ** (we + 2), history=False,
                                       n=len(out)))
    return out


def long_run_records(figure="fig3"):
    out = []
    for opt, base in (("adam", 0.12), ("adamw", 0.10)):
        for we in (-12, -10, -8, -6):
            err = base + 0.01 * abs(we + 8)
            out.append(make_record(opt, 1e-3, 2.0 ** we, err, figure=figure, epochs=30,
                                   n=len(out)))
    return out


def fig4_records():
    out = []
    for opt, sched, base in (("adam", "cosine", 0.14), ("adamw", "cosine", 0.11),
                             ("sgdw", "cosine", 0.10), ("adamw", "restarts", 0.105),
                             ("sgdw", "restarts", 0.095)):
        for we in (-9, -7):
            out.append(make_record(opt, 1e-3, 2.0 ** we, base + 0.01 * (we == -9),
                                   figure="fig4", schedule=sched, epochs=30,
                                   T_0=2 if sched == "restarts" else None, n=len(out)))
    return out


def fig1_records():
    out = []
    for sched in ("fixed", "step", "cosine"):
        out += grid("adam", diagonal, seeds=(0,), figure="fig1", schedule=sched)
        out += grid("adamw", separable, seeds=(0,), figure="fig1", schedule=sched)
    return out


def panel_axes(fig):
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


# ----------------------------------------------------------------------------- stats


def test_heatmap_table_means_over_seeds_and_marks_diverged():
    recs = grid("sgd", diagonal, diverge={(-1, -12)}) + [
        make_record("sgd", 0.5, 2.0 ** -3, 0.5, state="RUNNING", n=999),  # ignored
    ]
    t = heatmap_table(recs)
    assert t.shape == (len(LR_EXP), len(LAM_EXP))
    np.testing.assert_allclose(t.rows, [2.0 ** e for e in LR_EXP])
    np.testing.assert_allclose(t.cols, [2.0 ** e for e in LAM_EXP])
    assert (t.counts == 2).all()
    # seeds carry ±noise: the mean is the noiseless surface
    i, j = LR_EXP.index(-3), LAM_EXP.index(-6)
    assert t.values[i, j] == pytest.approx(diagonal(-3, -6))
    assert t.diverged[LR_EXP.index(-1), LAM_EXP.index(-12)]
    assert np.isnan(t.values[LR_EXP.index(-1), LAM_EXP.index(-12)])
    assert t.diverged.sum() == 1


def test_one_diverged_seed_poisons_the_cell_and_missing_cells_are_nan():
    recs = [make_record("adamw", 1e-3, 1e-4, 0.1, seed=0),
            make_record("adamw", 1e-3, 1e-4, 0.1, seed=1, diverged=True),
            make_record("adamw", 1e-3, 1e-3, 0.2, seed=0),
            make_record("adamw", 1e-2, 1e-4, 0.3, seed=0)]
    t = heatmap_table(recs)
    assert t.diverged[0, 0] and np.isnan(t.values[0, 0])
    assert t.missing[1, 1] and not t.diverged[1, 1] and np.isnan(t.values[1, 1])
    assert best_cell(t) == (1e-3, 1e-3, 0.2)


@pytest.mark.parametrize(
    ("records", "match"),
    [
        ([], "completed"),
        ([make_record("sgd", 1e-3, 1e-4, 0.1, state="FAIL")], "completed"),
        ([make_record("sgd", 1e-3, 1e-4, 0.1), make_record("adam", 1e-3, 1e-4, 0.1)],
         "'optimizer'"),
        ([make_record("sgd", 1e-3, 1e-4, 0.1, epochs=10),
          make_record("sgd", 1e-3, 1e-4, 0.1, epochs=20)], "'epochs'"),
        ([make_record("sgd", None, 1e-4, 0.1)], "'lr'"),
    ],
)
def test_heatmap_table_rejects_bad_input(records, match):
    with pytest.raises(ValueError, match=match):
        heatmap_table(records)


def test_statistic_says_coupled_for_the_diagonal_valley():
    stat = decoupling_statistic(heatmap_table(grid("sgd", diagonal)))
    assert stat.verdict == "coupled"
    # the fitted optimum (parabola of log error) is within a grid step of the true one; at
    # the grid edge, where the valley saturates, it is clamped
    np.testing.assert_allclose(np.log2(stat.best_lambda), [-9 - e for e in LR_EXP], atol=1.05)
    assert stat.rho < -0.95
    assert stat.decades > 4 * math.log10(2)  # truly 5 grid steps (2^-3 / 2^-8)
    assert stat.lr_ratio == pytest.approx(32)
    assert -1.2 < stat.slope < -0.8
    assert stat.top_k_rho < -0.5  # the top-10 cells lie along the anti-diagonal
    assert f"best λ moves {stat.decades:.1f} decades across a 32× range of learning rates " \
        f"(ρ = {stat.rho:+.2f})" in stat.text
    assert stat.text.endswith("coupled — a diagonal valley")


def test_statistic_says_decoupled_for_the_separable_basin():
    stat = decoupling_statistic(heatmap_table(grid("adamw", separable)))
    assert stat.verdict == "decoupled"
    np.testing.assert_allclose(np.log2(stat.best_lambda), -7, atol=0.25)
    assert stat.decades < 0.05 and abs(stat.slope) < 0.05
    assert abs(stat.top_k_rho) < 0.2
    assert "best λ stays within 0.0 decades across a 32× range" in stat.text
    assert stat.text.endswith("decoupled — a separable basin")


def test_statistic_one_grid_step_is_still_decoupled_two_monotone_steps_are_coupled():
    # best λ alternates between 2^-7 and 2^-6 (one grid step, 0.30 decades)
    def wobble(le, we):
        return separable(le, we) + (0.0 if le % 2 else 0.011 * (we + 6.0) ** 2 - 0.01 *
                                    (we + 7) ** 2)
    assert decoupling_statistic(heatmap_table(grid("adamw", wobble))).verdict == "decoupled"

    def drift(le, we):  # best log2 λ = -7 + (le+6)/2.5 rounded: moves 2 steps, monotone
        return 0.07 + 0.01 * (we + 7 - round((le + 6) / 2.5)) ** 2
    stat = decoupling_statistic(heatmap_table(grid("adamw", drift)))
    assert 1.5 * math.log10(2) < stat.decades < 3.5 * math.log10(2)
    assert stat.rho > 0.7 and stat.verdict == "coupled"
    assert "grows with the learning rate (not the L2 direction)" in stat.text


def test_statistic_inconclusive_when_best_lambda_jumps_without_trend():
    best = {-6: -4, -5: -9, -4: -9, -3: -4, -2: -4, -1: -9}  # no monotone relation to α

    def jumpy(le, we):
        return 0.07 + 0.01 * (we - best[le]) ** 2
    stat = decoupling_statistic(heatmap_table(grid("adam", jumpy)))
    assert stat.decades > 4 * math.log10(2)
    assert abs(stat.rho) < 0.5
    assert stat.verdict == "inconclusive"


def test_statistic_ties_use_geometric_mean_and_nan_rows_are_skipped():
    recs = [make_record("adamw", 1e-3, 2.0 ** -8, 0.1, n=0),
            make_record("adamw", 1e-3, 2.0 ** -6, 0.1, n=1),  # tie with 2^-8
            make_record("adamw", 1e-3, 2.0 ** -4, 0.3, n=2),
            make_record("adamw", 1e-2, 2.0 ** -6, 0.1, n=3),
            make_record("adamw", 1e-2, 2.0 ** -4, 0.2, n=4),
            make_record("adamw", 1e-1, 2.0 ** -6, 0.0, diverged=True, n=5)]  # all-NaN row
    stat = decoupling_statistic(heatmap_table(recs))
    np.testing.assert_allclose(stat.rows, [1e-3, 1e-2])
    np.testing.assert_allclose(stat.best_lambda, [2.0 ** -7, 2.0 ** -6])
    assert stat.decades == pytest.approx(math.log10(2))
    assert stat.verdict == "decoupled"


def test_statistic_ignores_a_zero_decay_baseline_column():
    recs = grid("adamw", separable) + [
        make_record("adamw", 2.0 ** le, 0.0, 0.01, n=900 + le) for le in LR_EXP]
    t = heatmap_table(recs)
    assert t.cols[0] == 0.0 and best_cell(t)[1] == 0.0
    stat = decoupling_statistic(t)
    np.testing.assert_allclose(np.log2(stat.best_lambda), -7, atol=0.25)
    assert stat.verdict == "decoupled"
    assert len(panel_axes(F.fig_heatmaps(recs))) == 1


def test_statistic_insufficient_data():
    recs = [make_record("adamw", 1e-3, 1e-4, 0.1), make_record("adamw", 1e-3, 1e-3, 0.2)]
    stat = decoupling_statistic(heatmap_table(recs))
    assert stat.verdict == "insufficient data" and math.isnan(stat.rho)


def test_top_k_cells_are_the_lowest_finite_cells():
    recs = grid("adam", diagonal, diverge={(-3, -6)})  # the true optimum diverges
    t = heatmap_table(recs)
    top = top_k_cells(t, 10)
    assert len(top) == 10
    flat = [(t.values[i, j], (i, j)) for i in range(t.shape[0]) for j in range(t.shape[1])
            if np.isfinite(t.values[i, j])]
    expected = [c for _, c in sorted(flat)[:10]]
    assert sorted(top) == sorted(expected)
    assert (LR_EXP.index(-3), LAM_EXP.index(-6)) not in top
    assert t.values[top[0]] <= min(t.values[c] for c in top)
    with pytest.raises(ValueError, match="k must be"):
        top_k_cells(t, 0)


def test_budget_shift_raw_moves_normalized_stays():
    recs = supp3_records()
    raw = [r for r in recs if r["weight_decay_norm"] is None]
    norm = [r for r in recs if r["weight_decay_norm"] is not None]
    best_raw = best_lambda_by_budget(raw, "weight_decay")
    assert [v[1] for v in best_raw.values()] == [2.0 ** -6, 2.0 ** -7, 2.0 ** -8]
    best_norm = best_lambda_by_budget(norm, "weight_decay_norm")
    assert {v[1] for v in best_norm.values()} == {2.0 ** -5}
    assert "moves 0.6 decades" in budget_shift(best_raw, "raw λ")
    assert "stays within 0.0 decades" in budget_shift(best_norm, "λ_norm")


# ----------------------------------------------------------------------------- figures


def test_fig2_panels_top10_circles_and_diverged_marks():
    from matplotlib.figure import Figure

    recs = fig2_records()
    fig = F.fig2(recs)
    assert isinstance(fig, Figure)
    axes = panel_axes(fig)
    assert len(axes) == 4
    titles = [ax.get_title() for ax in axes]
    assert titles[0].startswith("SGD\ncoupled") and titles[2].startswith("Adam\ncoupled")
    assert titles[1].startswith("SGDW\ndecoupled") and titles[3].startswith("AdamW\ndecoupled")
    # the circled cells (two scatter collections: top 2-10 and the best) are the top 10
    sgd_table = heatmap_table([r for r in recs if r["optimizer"] == "sgd"])
    circled = np.vstack([c.get_offsets() for c in axes[0].collections])
    assert sorted(map(tuple, circled.astype(int)[:, ::-1])) == sorted(top_k_cells(sgd_table))
    # diverged cells are labelled, values printed
    texts = [t.get_text() for t in axes[0].texts]
    assert texts.count("div") == 3
    assert f"{100 * diagonal(-3, -6):.1f}" in texts
    assert [t.get_text() for t in axes[1].texts].count("div") == 0


def test_fig2_draws_empty_panel_for_missing_optimizer_and_rejects_nothing():
    recs = grid("adamw", separable)
    fig = F.fig2(recs)
    assert len(panel_axes(fig)) == 4
    assert "no completed trials" in [t.get_text() for t in panel_axes(fig)[0].texts]
    with pytest.raises(ValueError, match="fig2 needs"):
        F.fig2([make_record("adamw", 1e-3, 1e-4, 0.1, state="RUNNING")])


def test_fig1_grid_of_optimizers_by_schedules():
    fig = F.fig1(fig1_records())
    axes = panel_axes(fig)
    assert len(axes) == 6
    assert axes[0].get_title().startswith("Adam, fixed schedule\ncoupled")
    assert axes[5].get_title().startswith("AdamW, cosine schedule\ndecoupled")
    with pytest.raises(ValueError, match="fig1 needs"):
        F.fig1(grid("sgd", diagonal, figure="fig1"))


def test_fig_heatmaps_generic_panel_per_optimizer():
    fig = F.fig_heatmaps(grid("sgd", diagonal) + grid("sgdw", separable), title="sweep")
    assert [ax.get_title().split("\n")[0] for ax in panel_axes(fig)] == ["SGD", "SGDW"]
    assert len(fig.axes) == 4  # two panels, two colour bars
    with pytest.raises(ValueError, match="completed"):
        F.fig_heatmaps([])


def test_fig3_four_panels_and_requires_both_optimizers():
    recs = long_run_records()
    fig = F.fig3(recs)
    axes = panel_axes(fig)
    assert len(axes) == 4
    # (c) test error vs λ: one line per optimizer, best at λ=2^-8
    lines = axes[2].get_lines()
    assert len(lines) == 2
    x, y = lines[1].get_data()
    assert x[np.argmin(y)] == 2.0 ** -8
    with pytest.raises(ValueError, match="adamw"):
        F.fig3([r for r in recs if r["optimizer"] == "adam"])


def test_fig4_curves_and_restart_labels():
    fig = F.fig4(fig4_records())
    (ax,) = panel_axes(fig)
    labels = [line.get_label().split(" ")[0] for line in ax.get_lines()]
    assert labels == ["Adam", "AdamW", "SGDW", "AdamWR", "SGDWR"]
    # restart curves carry period-end dots at epochs 2, 6, 14, 30 (T_0=2, T_mult=2)
    ends = ax.collections[0].get_offsets()[:, 0]
    np.testing.assert_allclose(ends, [2, 6, 14, 30])
    with pytest.raises(ValueError, match="fig4 needs"):
        F.fig4(fig2_records())


def test_supp1_from_schedule_and_from_records():
    fig = F.supp1()
    (ax,) = panel_axes(fig)
    x, eta = ax.get_lines()[0].get_data()
    assert 1499 < x[-1] < 1500 and eta[-1] < 1e-3  # ends annealed, not restarted
    assert eta[0] == pytest.approx(1.0) and eta.min() >= 0 and eta.max() <= 1 + 1e-12
    # restarts at 100, 300, 700: η jumps back to 1 right after
    for end in (100, 300, 700):
        k = int(np.searchsorted(x, end))
        assert x[k] == end and eta[k] == pytest.approx(1.0) and eta[k - 1] < 1e-3
    assert [t.get_text() for t in ax.texts] == ["100", "300", "700", "1500"]
    fig = F.supp1(fig4_records())
    (ax,) = panel_axes(fig)
    assert "stored" in ax.get_lines()[0].get_label()
    with pytest.raises(ValueError, match="T_0"):
        F.supp1(T_0=0)


def test_supp3_panels_and_sentence():
    recs = supp3_records()
    fig = F.supp3(recs)
    assert len(panel_axes(fig)) == 6  # (raw, norm) × 3 budgets
    assert len(fig.axes) == 7  # one shared colour bar
    sentence = fig.get_supxlabel() if hasattr(fig, "get_supxlabel") else fig._supxlabel.get_text()
    assert "raw λ moves 0.6 decades" in sentence and "λ_norm stays within 0.0" in sentence
    with pytest.raises(ValueError, match="supp3"):
        F.supp3([])


# ----------------------------------------------------------------------------- report


def test_write_report_writes_html_pngs_and_verdicts(tmp_path):
    recs = (fig2_records() + fig1_records() + long_run_records() + fig4_records()
            + supp3_records()
            + [make_record("adamw", 1e-3, 1e-4, 0.1, state="RUNNING", figure="fig2", n=5000),
               make_record("adam", 1e-3, 1e-4, 0.1, state="WAITING", figure="fig2", n=5001)])
    spec = {"name": "demo <script>alert(1)</script>", "experiments": {"fig2": {"lr": [1, 2]}}}
    path = write_report(recs, tmp_path / "out", spec=spec, versions={"torch": "2.x"})
    assert path == tmp_path / "out" / "report.html"
    text = path.read_text(encoding="utf-8")
    for name in ("fig1", "fig2", "fig3", "fig4", "supp1", "supp3"):
        png = tmp_path / "out" / f"{name}.png"
        assert png.exists() and png.stat().st_size > 10_000
        assert f"src='{name}.png'" in text
    assert "coupled — a diagonal valley" in text
    assert "decoupled — a separable basin" in text
    assert "λ_norm stays within 0.0 decades" in text
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "RUNNING" in text and "2.x" in text
    assert "Figures not drawn" not in text
    assert (tmp_path / "out" / "stats.json").exists()


def test_write_report_lists_figures_it_cannot_draw(tmp_path):
    recs = [make_record("adamw", 1e-3, 1e-4, 0.1, state="RUNNING", figure="fig2")]
    text = write_report(recs, tmp_path).read_text(encoding="utf-8")
    assert "Figures not drawn" in text and "fig2 needs" in text
    assert (tmp_path / "supp1.png").exists()  # always possible
    assert not (tmp_path / "fig2.png").exists()
    with pytest.raises(ValueError, match="records must be"):
        write_report({"a": 1}, tmp_path)


def test_records_from_the_store_feed_the_report(tmp_path):
    """Contract check: trials written the way the sweep writes them, read by load_records."""
    optuna = pytest.importorskip("optuna")
    store = pytest.importorskip("weightdecay.harness.store")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=url, study_name="demo")
    config_keys = ("dataset model optimizer lr weight_decay weight_decay_norm decay_convention "
                   "schedule T_0 T_mult milestones drop_factor epochs batch_size seed device "
                   "momentum").split()
    recs = grid("sgd", diagonal, seeds=(0,), diverge={(-1, -12)}) + grid("sgdw", separable,
                                                                          seeds=(0,))
    for n, r in enumerate(recs):
        attrs = {name: r[name] for name in ("history", "final_test_error", "best_test_error",
                                            "final_train_loss", "diverged", "wall_seconds")}
        attrs.update(config={k: r[k] for k in config_keys}, experiment="fig2", figure="fig2",
                     key=f"k{n}")
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE, value=0.0, user_attrs=attrs))
    loaded = store.load_records(url, "demo")
    assert len(loaded) == len(recs)
    sgd = heatmap_table([r for r in loaded if r["optimizer"] == "sgd"])
    assert sgd.diverged.sum() == 1
    assert decoupling_statistic(sgd).verdict == "coupled"
    text = write_report(loaded, tmp_path / "report").read_text(encoding="utf-8")
    assert "coupled — a diagonal valley" in text and "decoupled — a separable basin" in text


def _noisy_flat_basin(num_test, seed=3):
    """A separable basin whose floor is flat over 4 columns, plus measurement noise of one
    binomial standard error (p=1.5 %, n=1000): the arg-min per row wanders by chance."""
    rng = np.random.default_rng(seed)
    records = []
    for i, le in enumerate(range(-6, -2)):
        for we in range(-10, -4):
            true = 0.015 if -9 <= we <= -6 else 0.03
            err = true + rng.normal(0, math.sqrt(0.015 * 0.985 / 1000))
            r = make_record("adamw", 2.0**le, 2.0**we, round(err, 3), n=i * 10 + we,
                            history=False)
            if num_test is not None:
                r["num_test"] = num_test
            records.append(r)
    return records


def test_best_lambda_is_robust_to_one_seed_of_measurement_noise():
    """A separable basin with a flat floor, measured with one seed on 1000 test examples:
    the arg-min per row wanders by chance, the fitted optimum does not — the statistic
    reads "decoupled" in nearly every noise draw, and a real valley stays "coupled"."""
    verdicts = [decoupling_statistic(heatmap_table(_noisy_flat_basin(1000, seed=s))).verdict
                for s in range(40)]
    assert verdicts.count("decoupled") >= 36, verdicts
    argmin_shift = []
    for s in range(40):
        t = heatmap_table(_noisy_flat_basin(None, seed=s))
        best = t.cols[np.nanargmin(t.values, axis=1)]
        argmin_shift.append(np.log10(best.max() / best.min()))
    assert np.mean(np.array(argmin_shift) <= 0.35) < 0.5  # what a plain arg-min would say
    valley = [dict(r, num_test=1000) for r in grid("sgd", diagonal, seeds=(0,))]
    assert decoupling_statistic(heatmap_table(valley)).verdict == "coupled"


def test_row_tolerance_is_one_binomial_standard_error():
    from weightdecay.report.stats import row_tolerance

    t = heatmap_table(_noisy_flat_basin(1000))
    i = 0
    m = np.nanmin(t.values[i])
    assert row_tolerance(t, i) == pytest.approx(math.sqrt(m * (1 - m) / 1000))
    assert row_tolerance(heatmap_table(_noisy_flat_basin(None)), i) < 1e-9
