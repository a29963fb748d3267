"""Your own model and data (issue 17, item 1): import strings in specs and on the command
line, resolved through the registry; who may import them (``--allow-module``); the hash of
their source in every run; and everything else unchanged for such a model -- workers on
SQLite and PostgreSQL, checkpoints and resume, the report and its heat maps, the
scale-invariance probe -- with the data set loaded once per worker.

Each test writes its own small module (a unique name, so that ``sys.modules`` never hands
one test another's code); the end-to-end test sweeps the worked example,
``examples/own_model``, with two spawned workers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch

from weightdecay import api, cli, registry
from weightdecay.harness import train
from weightdecay.harness.build import RunSetupError, check_user_code, get_dataset
from weightdecay.harness.config import RunConfig
from weightdecay.harness.data import Dataset, user_dataset
from weightdecay.harness.records import load_records
from weightdecay.harness.spec import SpecError, plan_sweep
from weightdecay.harness.store import StoreError
from weightdecay.harness.study import create_sweep
from weightdecay.harness.worker import run_worker
from weightdecay.report.model import build_report

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_model"
PAGE = Path(__file__).resolve().parents[1] / "docs" / "own-model.md"
_BLOCK = re.compile(r"(?:(<!-- not-run: [^>]+ -->)\n)?```python\n(.*?)```", re.S)
PG_URL = os.environ.get("WEIGHTDECAY_TEST_PG_URL")

LAB = '''
import torch
from torch import nn

LOADS = []  # one entry per call of data(): a worker loads its data set once


def mlp(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Linear(16, num_classes))


def linear(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(8, num_classes))


def data():
    LOADS.append(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return x[:64], y[:64], x[64:], y[64:]


def as_dataset():
    from weightdecay.harness.data import Dataset
    x, y, xt, yt = data()
    return Dataset("whatever", x, y, xt, yt, num_classes=3, input_shape=(8,))


def not_a_model(input_shape, num_classes):
    return 42


def no_parameters(input_shape, num_classes):
    return nn.Flatten()


def wrong_logits(input_shape, num_classes):
    return nn.Linear(8, num_classes + 1)


def raises(*args):
    raise RuntimeError("the lab's GPU is down")


def three_things():
    return data()[:3]


def float_labels():
    x, y, xt, yt = data()
    return x, y.float(), xt, yt.float()


def negative_labels():
    x, y, xt, yt = data()
    return x, y - 1, xt, yt


def numpy_arrays():
    return tuple(t.numpy() for t in data())


def ragged():
    x, y, xt, yt = data()
    return x, y, xt[:, :4], yt
'''


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """A user module, its name unique to the test, in ``tmp_path`` (the working directory and
    first on ``sys.path``); returns its name."""
    name = f"lab_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(LAB)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)


def _config(lab: str, **kw) -> RunConfig:
    return RunConfig(**{"dataset": f"{lab}:data", "model": f"{lab}:mlp", "optimizer": "adamw",
                        "lr": 0.01, "weight_decay": 1e-3, "epochs": 2, "batch_size": 16, **kw})


def _spec(lab: str, name: str = "own", seeds=(0,)) -> dict:
    return {"name": name, "defaults": {"dataset": f"{lab}:data", "model": f"{lab}:mlp",
                                       "batch_size": 16},
            "experiments": [{"name": "fig2", "figure": "fig2", "epochs": [2],
                             "seeds": list(seeds), "optimizers": [
                                 {"optimizer": "adamw", "lr": [0.01, 0.02],
                                  "weight_decay": [1e-4, 1e-3]}]}]}


def _one_line(code: int, err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("weightdecay: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


# ------------------------------------------------------------------------------ names, trust


def test_import_strings_are_checked_for_form_and_trust_by_module():
    assert registry.module_allowed("mylab.models:net", ["mylab"])
    assert registry.module_allowed("mylab:net", ["mylab"])
    assert registry.module_allowed("mylab.models:net", ["mylab.models"])
    assert not registry.module_allowed("mylabx:net", ["mylab"])
    assert not registry.module_allowed("mylab:net", ["mylab.models"])
    assert not registry.module_allowed("mylab:net", [])
    for bad in ("mylab", "mylab:", ":f", "my lab:f", "mylab:f:g", "1lab:f"):
        with pytest.raises(ValueError):
            RunConfig(model=bad)
    RunConfig(model="mylab.models:net", dataset="mylab:data")  # nothing is imported here
    with pytest.raises(ValueError, match="width applies to the built-in models"):
        RunConfig(model="mylab:net", width=8)
    with pytest.raises(ValueError, match="test_size"):
        RunConfig(dataset="mylab:data", model="mlp", test_size=100)
    with pytest.raises(ValueError, match="64 hex digits"):
        RunConfig(model="mylab:net", source_hash="abc")
    with pytest.raises(ValueError, match="built-in ones only"):
        RunConfig(source_hash="0" * 64)
    assert "source_hash" not in json.dumps(RunConfig().key())  # built-in keys unchanged
    assert RunConfig().key() == RunConfig(source_hash=None).key()


def test_a_module_that_fails_says_what_was_expected_in_one_line(lab, tmp_path):
    (tmp_path / f"{lab}_broken.py").write_text("raise RuntimeError('half-written file')\n")
    cases = [(f"{lab}_missing:net", "cannot import module"),
             (f"{lab}_broken:net", "RuntimeError: half-written file"),
             (f"{lab}:nope", "has no callable 'nope'"),
             (f"{lab}:LOADS", "has no callable 'LOADS'")]
    for name, needle in cases:
        with pytest.raises(registry.UserCodeError, match=needle) as err:
            registry.resolve("model", name)
        assert "\n" not in str(err.value)
        assert "(input_shape, num_classes) -> torch.nn.Module" in str(err.value)
    sys.modules.pop(f"{lab}_broken", None)


@pytest.mark.parametrize("function,needle", [
    ("three_things", "returned a tuple of 3"),
    ("float_labels", "integer class labels"),
    ("negative_labels", "class labels must be >= 0"),
    ("numpy_arrays", "x_train is a ndarray, not a tensor"),
    ("ragged", "x_test has shape (32, 4), expected (N, *(8,))"),
    ("raises", "RuntimeError: the lab's GPU is down"),
    ("mlp", "TypeError"),
])
def test_a_data_set_that_returns_the_wrong_thing_is_one_line(lab, function, needle):
    with pytest.raises(registry.UserCodeError) as err:
        user_dataset(f"{lab}:{function}")
    message = str(err.value)
    assert needle in message and "\n" not in message
    assert "(x_train, y_train, x_test, y_test)" in message or "labels" in message


def test_a_data_set_of_tensors_or_a_dataset(lab):
    ds = user_dataset(f"{lab}:data")
    assert ds.name == f"{lab}:data" and ds.input_shape == (8,) and ds.num_classes == 3
    assert ds.y_train.dtype == torch.int64 and ds.num_train == 64 and ds.num_test == 32
    own = user_dataset(f"{lab}:as_dataset")
    assert isinstance(own, Dataset) and own.name == f"{lab}:as_dataset"


@pytest.mark.parametrize("function,needle", [
    ("not_a_model", "returned a int"), ("no_parameters", "without parameters"),
    ("raises", "raised RuntimeError"), ("wrong_logits", "expected logits of shape (2, 3)"),
])
def test_a_model_that_returns_the_wrong_thing_is_one_line(lab, function, needle):
    with pytest.raises(registry.UserCodeError, match=needle.replace("(", r"\(").replace(
            ")", r"\)")) as err:
        check_user_code(_config(lab, model=f"{lab}:{function}"))
    assert "\n" not in str(err.value)


def test_the_source_hash_follows_the_code_not_its_path(lab, tmp_path):
    first = registry.source_hash(f"{lab}:mlp", f"{lab}:data")
    assert first == registry.source_hash(f"{lab}:mlp", f"{lab}:data")  # once per process
    assert registry.source_hash("mlp", "mnist1d") is None
    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.copy(tmp_path / f"{lab}.py", other / f"{lab}.py")
    sys.modules.pop(lab)
    sys.path.insert(0, str(other))
    try:
        assert registry.source_hash(f"{lab}:mlp", f"{lab}:data") == first  # same code
        (other / f"{lab}.py").write_text(LAB + "\n# changed\n")
        sys.modules.pop(lab)
        assert registry.source_hash(f"{lab}:mlp", f"{lab}:data") != first
    finally:
        sys.path.remove(str(other))


# ------------------------------------------------------------------------------ train


def test_train_imports_user_code_only_when_allowed(lab, capsys, tmp_path):
    argv = ["train", "--model", f"{lab}:mlp", "--dataset", f"{lab}:data", "--epochs", "1",
            "--batch-size", "16"]
    code = cli.main(argv)
    _one_line(code, capsys.readouterr().err, f"--allow-module {lab}")
    assert lab not in sys.modules  # refused before anything was imported
    code = cli.main([*argv, "--allow-module", f"{lab}", "--json", str(tmp_path / "r.json")])
    assert code == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["config"]["source_hash"] == registry.source_hash(f"{lab}:mlp", f"{lab}:data")
    code = cli.main([*argv, "--allow-module", "not a module"])
    _one_line(code, capsys.readouterr().err, "not a module name")
    code = cli.main([*argv, "--allow-module", lab, "--source-hash", "1" * 64])
    _one_line(code, capsys.readouterr().err, "the module changed since")
    code = cli.main([*argv[:2], f"{lab}:not_a_model", *argv[3:], "--allow-module", lab])
    _one_line(code, capsys.readouterr().err, "returned a int", "expected a function")


def test_a_user_model_resumes_from_its_checkpoint_bit_for_bit(lab, tmp_path):
    config = _config(lab, epochs=3, source_hash=registry.source_hash(f"{lab}:mlp",
                                                                     f"{lab}:data"))
    whole = train.run(config)

    class Stop(Exception):
        pass

    def stop_after_one(epoch, metrics):
        if epoch == 1:
            raise Stop

    ckpt = tmp_path / "run.pt"
    with pytest.raises(Stop):
        train.run(config, checkpoint_path=ckpt, on_epoch=stop_after_one)
    resumed = train.run(config, checkpoint_path=ckpt)
    assert resumed["history"]["train_loss"] == whole["history"]["train_loss"]
    assert resumed["final_test_error"] == whole["final_test_error"]
    changed = config.replace(source_hash="2" * 64)  # another version of the code
    with pytest.raises(ValueError, match="source_hash"):
        train.run(changed, checkpoint_path=ckpt)


def test_the_scale_invariance_probe_on_a_user_model(lab):
    record = train.run(_config(lab, scale_invariant_only=True))  # Linear -> BatchNorm
    assert not record["diverged"]
    with pytest.raises(RunSetupError, match="no weight of model"):
        train.run(_config(lab, model=f"{lab}:linear", scale_invariant_only=True))


# ------------------------------------------------------------------------------ sweeps


def test_a_spec_naming_bad_user_code_is_one_line_and_trains_nothing(lab, capsys, tmp_path):
    spec = tmp_path / "spec.json"
    for model, needle in ((f"{lab}_missing:net", "cannot import module"),
                          (f"{lab}:not_a_model", "returned a int")):
        spec.write_text(json.dumps({**_spec(lab), "defaults": {
            "dataset": f"{lab}:data", "model": model, "batch_size": 16}}))
        code = cli.main(["sweep", str(spec), "--workers", "0", "--no-progress"])
        _one_line(code, capsys.readouterr().err, needle, "expected a function")
        assert not (tmp_path / "runs").exists()
    with pytest.raises(SpecError, match="optimizers\\[0\\]"):
        plan_sweep({**_spec(lab), "defaults": {"dataset": f"{lab}:data",
                                               "model": f"{lab}_missing:net"}})


def test_workers_import_only_allowed_code_of_the_planned_version(lab, tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    plan = plan_sweep(_spec(lab))
    assert {r.config.source_hash for r in plan.runs} == {
        registry.source_hash(f"{lab}:mlp", f"{lab}:data")}
    create_sweep(plan, url)
    lines: list[str] = []
    result = run_worker(url, "own", out_dir=tmp_path, wait=False, log=lines.append)
    assert result.ran == 0 and len(lines) == 4
    assert all(f"handed back untouched: its user code is not allowed on this worker (start it "
               f"with --allow-module {lab}" in line for line in lines)
    assert {r["state"] for r in load_records(url, "own")} == {"WAITING"}
    # another version of the module on this worker: every trial is left to another worker
    (tmp_path / f"{lab}.py").write_text(LAB + "\n# edited after planning\n")
    sys.modules.pop(lab)
    lines.clear()
    result = run_worker(url, "own", out_dir=tmp_path, wait=False, log=lines.append,
                        allow_modules=[lab])
    assert result.ran == 0 and all("differs from the code the sweep was planned with" in line
                                   for line in lines), lines
    # sweeping the changed code into the study of the old code is refused
    with pytest.raises(StoreError, match="trained with other code"):
        api.sweep(_spec(lab), storage=url, workers=0, progress=False)
    (tmp_path / f"{lab}.py").write_text(LAB)  # the planned code back: the trials run
    sys.modules.pop(lab)
    result = run_worker(url, "own", out_dir=tmp_path, wait=False, log=lines.append,
                        allow_modules=[lab])
    assert result.completed == 4
    assert {r["state"] for r in load_records(url, "own")} == {"COMPLETE"}
    import optuna  # nothing lost, nothing run twice: the four planned trials, each once

    trials = optuna.load_study(study_name="own", storage=url).get_trials()
    assert len(trials) == 4 and {t.state.name for t in trials} == {"COMPLETE"}


def test_a_sweep_in_this_process_loads_the_data_set_once(lab, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(_spec(lab, seeds=(0, 1))))
    outcome = api.sweep(spec, workers=0, progress=False, out=tmp_path / "out")
    assert outcome.done and len(outcome.records) == 8
    assert len(sys.modules[lab].LOADS) == 1  # the check before the runs, and all 8 runs
    assert get_dataset(f"{lab}:data") is get_dataset(f"{lab}:data")


def test_the_report_never_averages_two_versions_of_the_code():
    from test_report import make_record

    old = [dict(make_record("adamw", 1e-3, 1e-4, 0.3, n=i, seed=i), model="lab:net",
                source_hash="a" * 64, trial_number=i) for i in range(2)]
    new = [dict(make_record("adamw", 1e-3, 1e-4, 0.1, n=i, seed=i), model="lab:net",
                source_hash="b" * 64, trial_number=10 + i) for i in range(2)]
    report = build_report(old + new, n_boot=20)
    assert [r["source_hash"] for r in report.records] == ["b" * 64] * 2
    assert any("2 run(s) of lab:net on mnist1d trained with other code (source sha256 "
               "aaaaaaaaaaaa...) are left out" in note for note in report.notes)


# ------------------------------------------------------------------------------ end to end


def test_the_worked_example_end_to_end(tmp_path, monkeypatch, capsys):
    """examples/own_model swept with `weightdecay sweep sweep.toml --workers 2` from its
    folder (3 x 3 x 2 seeds), then reported: every trial COMPLETE, report.html with its heat
    map, and the data set loaded once per process (the sweep's check, each worker); then the
    python blocks of docs/own-model.md, which use that example, run in its folder."""
    work = tmp_path / "own_model"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("runs", "__pycache__"))
    with (work / "mylab.py").open("a") as fh:  # count the data set's loads, per process
        fh.write(textwrap.dedent('''
            import os as _os
            _blobs = blobs

            def blobs(*args, **kwargs):
                with open("loads.txt", "a") as log:
                    log.write(f"{_os.getpid()}\\n")
                return _blobs(*args, **kwargs)
            '''))
    monkeypatch.chdir(work)
    monkeypatch.delitem(sys.modules, "mylab", raising=False)
    try:
        code = cli.main(["sweep", "sweep.toml", "--workers", "2", "--no-progress"])
        assert code == 0, capsys.readouterr().err[-3000:]
        url = "sqlite:///runs/own_model/store.db"
        code = cli.main(["report", "--storage", url, "--study", "own_model", "--out", "report"])
        assert code == 0, capsys.readouterr().err[-3000:]
    finally:
        sys.modules.pop("mylab", None)
    records = load_records(url, "own_model")
    assert len(records) == 18 and {r["state"] for r in records} == {"COMPLETE"}
    assert len({r["source_hash"] for r in records}) == 1 and records[0]["source_hash"]
    loads = (work / "loads.txt").read_text().split()
    assert len(loads) == len(set(loads)) <= 3, loads  # the sweep's check + 2 workers
    assert str(os.getpid()) in loads
    page = (work / "report" / "report.html").read_text(encoding="utf-8")
    assert "<h2 id='fig2'>" in page and "<img src='data:image/png;base64," in page
    assert "mylab:mlp" in page
    stats = json.loads((work / "report" / "stats.json").read_text())
    assert "optimizer=adamw (λ)" in stats["fig2"]
    # docs/own-model.md, its python blocks in order in one namespace, in the example's
    # folder: the sweep above is complete, so its api.sweep resumes at once
    blocks = _BLOCK.findall(PAGE.read_text(encoding="utf-8"))
    ran = [code for mark, code in blocks if not mark]
    assert len(ran) == 3 and len(blocks) == 4
    namespace: dict = {"__name__": "__notebook__"}
    try:
        for code in ran:
            exec(compile(code, str(PAGE), "exec"), namespace)
    finally:
        sys.modules.pop("mylab", None)
    out = capsys.readouterr().out
    assert "sweep 'own_model': 18 of 18 runs complete" in out and "final test error" in out
    assert (work / "runs" / "own_model" / "report.html").is_file()


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="WEIGHTDECAY_TEST_PG_URL is not set")
def test_a_postgresql_worker_runs_user_code_it_is_allowed(lab, tmp_path):
    study = f"own-{uuid.uuid4().hex[:8]}"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(_spec(lab, name=study)))
    outcome = api.sweep(spec, storage=PG_URL, plan_only=True)
    assert outcome.enqueued == 4
    worker = [sys.executable, "-m", "weightdecay.cli", "worker", "--storage", PG_URL,
              "--study", study, "--out", str(tmp_path), "--no-wait", "--threads", "1"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    refused = subprocess.run(worker, cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode == 0 and "--allow-module" in refused.stderr
    done = subprocess.run([*worker, "--allow-module", lab], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert {r["state"] for r in load_records(PG_URL, study)} == {"COMPLETE"}
