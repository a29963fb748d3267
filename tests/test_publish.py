"""Tests of weightdecay.report.publish: committed results are written from a run, the README
block is regenerated from them, and a fresh run is checked against them."""

from __future__ import annotations

import json

import pytest

from weightdecay.report import publish


def _stats(verdict="holds", est=-0.8):
    return {"scorecard": [
        {"key": "fig2.sgd", "source": "Fig. 2", "claim": "a | b", "metric": "slope",
         "estimate": {"estimate": est, "lo": est - 0.2, "hi": est + 0.2, "level": 0.9,
                      "valid": 1.0},
         "estimate_text": f"{est:+.2f}", "verdict": verdict, "rule": "r", "detail": ""},
        {"key": "fig1.adam", "source": "Fig. 1", "claim": "c", "metric": "m",
         "estimate": None, "estimate_text": "—", "verdict": "not run", "rule": "—",
         "detail": ""},
    ], "fig2": {"optimizer=sgd (λ)": {"slope": {"slope": {"estimate": est}, "reading": "x",
                                                "rows": [1.0], "best_lambda": [0.1]}}}}


def test_write_makes_results_and_regenerates_the_readme_block(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "stats.json").write_text(json.dumps(_stats()))
    (run / "fig2.png").write_bytes(b"png")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:quick -->\nstale text\n<!-- /results:quick -->\nend\n")
    publish.write(run, "quick", tmp_path / "results", readme)
    text = readme.read_text()
    assert "stale text" not in text
    assert "| Fig. 2 | a \\| b | slope | -0.80 | **holds** |  |" in text
    assert "fig1" not in text and text.endswith("<!-- /results:quick -->\nend\n")
    saved = json.loads((tmp_path / "results" / "quick.json").read_text())
    assert saved["scorecard"][0]["verdict"] == "holds" and "fig2_slopes" in saved
    assert (tmp_path / "results" / "quick-fig2.png").read_bytes() == b"png"
    assert (tmp_path / "results" / "quick.md").read_text().startswith("| source")
    readme.write_text("a <!-- results:other -->\nx\n<!-- /results:other --> b\n")
    with pytest.raises(SystemExit, match="block 'other' has no"):
        publish.write(run, "quick", tmp_path / "results", readme)
    (tmp_path / "results" / "other.txt").write_text("bench output\n")
    publish.fill_readme(readme.read_text(), tmp_path / "results")
    assert "```text\nbench output\n```" in publish.fill_readme(readme.read_text(),
                                                                tmp_path / "results")


def test_check_compares_verdicts_exactly_and_estimates_with_the_committed_interval(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    ref = tmp_path / "quick.json"
    ref.write_text(json.dumps(_stats()))  # fig2.sgd: -0.80 [-1.00, -0.60]
    for inside in (-0.8, -0.99, -0.61):
        (run / "stats.json").write_text(json.dumps(_stats(est=inside)))
        assert publish.check(run, ref) == []
    (run / "stats.json").write_text(json.dumps(_stats(est=-0.55)))
    assert publish.check(run, ref) == [
        "fig2.sgd: estimate -0.550 outside the committed interval [-1.000, -0.600]"]
    (run / "stats.json").write_text(json.dumps(_stats(verdict="refuted")))
    assert publish.check(run, ref) == ["fig2.sgd: verdict 'refuted', committed 'holds'"]
    assert publish.main(["check", str(run), "--name", "quick", "--results",
                         str(tmp_path)]) == 1


def test_check_uses_the_tolerance_where_there_is_no_interval(tmp_path):
    def stats(value):
        out = _stats()
        out["scorecard"][0]["estimate"] = {"estimate": value, "lo": None, "hi": None}
        return out

    run = tmp_path / "run"
    run.mkdir()
    ref = tmp_path / "quick.json"
    ref.write_text(json.dumps(stats(1.0)))
    (run / "stats.json").write_text(json.dumps(stats(1.04)))
    assert publish.check(run, ref, tol=0.05) == []
    (run / "stats.json").write_text(json.dumps(stats(1.1)))
    assert publish.check(run, ref, tol=0.05) == [
        "fig2.sgd: estimate +1.100, committed +1.000 (tolerance 0.05)"]


def test_the_readme_says_what_the_committed_results_say():
    """Every results block of README.md is the committed file it names, verbatim."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert "<!-- results:" in readme
    assert publish.fill_readme(readme, root / "docs" / "results") == readme, (
        "README.md results blocks differ from docs/results/: run "
        "`python -m weightdecay.report.publish readme`")


def test_hostile_names_and_files_are_refused_before_anything_is_written(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "stats.json").write_text(json.dumps(_stats()))
    results = tmp_path / "deep" / "results"
    for name in ("../escape", "/abs", "a/b", ".."):
        with pytest.raises(SystemExit, match="--name .* is not valid"):
            publish.main(["write", str(run), "--name", name, "--results", str(results),
                          "--no-readme"])
    assert not (tmp_path / "deep").exists() and not (tmp_path / "escape.json").exists()
    for bad in ('{"scorecard": 5}', "[1, 2]", '{"scorecard": [{"verdict": "holds"}]}'):
        (run / "stats.json").write_text(bad)
        with pytest.raises(SystemExit, match="holds no scorecard"):
            publish.main(["write", str(run), "--name", "quick", "--results", str(results),
                          "--no-readme"])
        with pytest.raises(SystemExit, match="holds no scorecard"):
            publish.check(run, run / "stats.json")
    assert not results.exists()
