"""weightdecay.api: the Python entry points the command line calls; their documentation page
runs as a notebook; they check their input as the commands do."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from test_cli import TINY_TOML
from weightdecay import api, cli
from weightdecay.harness.spec import SpecError
from weightdecay.harness.store import StoreError
from weightdecay.report.model import Report

torch.set_num_threads(1)

PAGE = Path(__file__).resolve().parents[1] / "docs" / "api" / "experiments.md"
_BLOCK = re.compile(r"(?:(<!-- not-run: [^>]+ -->)\n)?```python\n(.*?)```", re.S)


def test_the_experiments_page_runs_as_a_notebook(tmp_path, monkeypatch, capsys):
    """Its ```python blocks, in order, in one namespace, in an empty folder (a block marked
    ``<!-- not-run: reason -->`` is left out)."""
    blocks = _BLOCK.findall(PAGE.read_text(encoding="utf-8"))
    ran = [code for mark, code in blocks if not mark]
    assert len(ran) >= 4 and len(ran) < len(blocks)  # the reproduce block is marked
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__notebook__"}
    for code in ran:
        exec(compile(code, str(PAGE), "exec"), namespace)
    out = capsys.readouterr().out
    assert "study 'demo': 4 of 4 runs complete" in out and "best α =" in out
    assert (tmp_path / "runs" / "demo" / "report.html").is_file()
    assert isinstance(namespace["report"], Report)


# ------------------------------------------------------------------------------ the CLI


def test_the_command_line_calls_the_api(monkeypatch, tmp_path, capsys):
    calls = {}

    def recorder(name, result):
        def call(*args, **kwargs):
            calls[name] = (args, kwargs)
            return result
        monkeypatch.setattr(api, name, call)

    records = [{"state": "COMPLETE", "experiment": "e", "optimizer": "sgdw", "schedule": "cosine",
                "epochs": 1, "lr": 0.1, "weight_decay": 0.0, "final_test_error": 0.2}]
    recorder("sweep", api.SweepOutcome("s", "sqlite:///x.db", tmp_path, None, records))
    recorder("report", Report())
    recorder("reproduce", api.ReproduceOutcome("quick", "quick", "sqlite:///x.db", tmp_path,
                                               records, Report(), 1, 60.0))
    recorder("worker", SimpleNamespace(ran=0, completed=0, failed=0, lost=0))
    recorder("export", "trial_number\n")
    recorder("train", {"diverged": True, "history": {"epoch": [1]}})
    spec = tmp_path / "s.toml"
    spec.write_text(TINY_TOML)
    monkeypatch.chdir(tmp_path)
    for argv in (["sweep", str(spec), "--workers", "3"],
                 ["report", "--storage", "sqlite:///x.db", "--study", "s", "--out", "r"],
                 ["reproduce", "--preset", "quick", "--out", "q", "--seeds", "1,2"],
                 ["worker", "--storage", "sqlite:///x.db", "--study", "s", "--no-wait"],
                 ["export", "--storage", "sqlite:///x.db", "--study", "s"],
                 ["train", "--epochs", "1", "--dataset", "digits", "--model", "mlp"]):
        assert cli.main(argv) == 0, capsys.readouterr().err
    assert calls["sweep"] == ((str(spec),), dict(storage=None, study=None, out=None, workers=3,
                                                  plan_only=False, max_runs=10_000,
                                                  progress=True, adopt_study=None))
    assert calls["report"][0] == ("sqlite:///x.db", "s", "r")
    assert calls["reproduce"] == (("quick", "q"), dict(seeds=[1, 2], workers=2, progress=True,
                                                      download=False, adopt_study=None))
    assert calls["worker"][1]["wait"] is False and calls["export"][0][2] == "csv"
    assert calls["train"][0][0].epochs == 1
    out = capsys.readouterr().out
    assert "reproduce: 1 of 1 runs run now, 1.0 min wall" in out and "trial_number" in out


# ------------------------------------------------------------------------------ input


def test_bad_input_is_refused_before_anything_is_written(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    spec = json.loads(json.dumps({"name": "n", "experiments": [{"name": "e", "optimizers": [
        {"optimizer": "sgdw", "lr": [0.1], "weight_decay": [0.0]}]}]}))
    with pytest.raises(api.InputError, match="not a directory"):
        api.sweep(spec, out=afile)
    with pytest.raises(api.InputError, match="which is a file"):
        api.sweep(spec, out=afile / "sub")
    with pytest.raises(SpecError, match="learning_rate"):
        api.sweep({**spec, "learning_rate": 1}, out=tmp_path / "o")
    with pytest.raises(api.InputError, match="no 'name'"):
        api.sweep({"experiments": spec["experiments"]}, out=tmp_path / "o")
    with pytest.raises(StoreError, match="does not exist"):
        api.report(f"sqlite:///{tmp_path / 'none.db'}", "s", out=tmp_path / "o")
    with pytest.raises(SpecError, match="twice"):
        api.reproduce("quick", tmp_path / "o", seeds=[5, 5])
    with pytest.raises(api.InputError, match="lr"):
        api.train({"lr": -1.0})
    with pytest.raises(api.InputError, match="checkpoint"):
        api.train({"dataset": "digits", "model": "mlp"}, checkpoint=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_missing_harness_module_is_named(monkeypatch):
    assert api.missing_harness_module() is None
    monkeypatch.setitem(sys.modules, "scipy", None)
    assert api.missing_harness_module() == "scipy"
