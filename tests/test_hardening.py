"""Hostile and broken input at the command line: one line ``weightdecay: error: ...``, exit
code 2, no traceback, and nothing written -- or, where a command runs, exit codes that say
whether every run completed. Every case runs ``weightdecay.cli.main`` in a temporary
working directory."""

from __future__ import annotations

import copy
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from test_cli import TINY_TOML
from weightdecay import api, cli
from weightdecay.harness import presets, store
from weightdecay.report.model import Report

torch.set_num_threads(1)



def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    """A fresh working directory inside ``tmp_path/work`` (its parent holds the spec files
    and a ``victim`` folder that no command may touch)."""
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "victim").mkdir()
    monkeypatch.chdir(work)
    return work


def toml(name: str = "hard", extra: str = "") -> str:
    """test_cli's tiny spec (digits, mlp, 2 runs of 1 epoch) named ``name`` (any string:
    written escaped), with ``extra`` lines in its experiment."""
    text = TINY_TOML.replace('name = "clitiny"', f"name = {json.dumps(name)}", 1)
    return text.replace("epochs = [1]\n", f"epochs = [1]\n{extra}\n", 1)


def spec(tmp_path: Path, name: str = "hard", extra: str = "", text: str | None = None) -> str:
    path = tmp_path / f"spec-{abs(hash((name, extra, text)))}.toml"
    path.write_text(text if text is not None else toml(name, extra))
    return str(path)


def refused(capsys, root: Path, *argv: str, needle: str = "") -> str:
    """Run the command; assert one error line, exit 2, and that nothing under ``root``
    changed. Returns the line."""
    before = files(root)
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("weightdecay: error: "), err
    assert "Traceback" not in out + err
    assert needle in lines[0], lines[0]
    assert files(root) == before, files(root) - before
    return lines[0]


# ------------------------------------------------------------------------------ 1. paths


HOSTILE_NAMES = ["../../../../victim", "../victim", "/tmp/victim-abs", "a/b", "..", ".",
                 "x" * 300, "name with space", "-rf", "nul\x00byte", "ünïcode", ""]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_spec_names_are_refused_before_anything_is_written(capsys, cwd, tmp_path,
                                                                    name):
    path = spec(tmp_path, name=name)
    refused(capsys, tmp_path, "sweep", path, "--workers", "0", "--no-progress")
    assert not Path(tmp_path / "victim" / "trials.csv").exists()


@pytest.mark.parametrize("name", ["../../victim", "/tmp/victim-abs", "a/b", ".."])
def test_hostile_study_and_flag_names_are_refused(capsys, cwd, tmp_path, name):
    refused(capsys, tmp_path, "sweep", spec(tmp_path), "--study", name, "--workers", "0")
    refused(capsys, tmp_path, "sweep", "--name", name, "--optimizers", "sgdw", "--lr", "0.1",
            "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--workers", "0")


def test_worker_default_folder_needs_a_safe_study_name():
    from weightdecay.harness.spec import SpecError
    from weightdecay.harness.worker import default_out_dir

    with pytest.raises(SpecError, match="not valid"):
        default_out_dir("postgresql+psycopg2://u@h/db", "../../victim")
    assert default_out_dir("postgresql+psycopg2://u@h/db", "ok-1.2") == Path("runs/ok-1.2")


def test_default_output_folder_is_runs_study(capsys, cwd, tmp_path):
    assert cli.main(["sweep", spec(tmp_path, name="inside"), "--workers", "0",
                     "--no-progress"]) == 0
    capsys.readouterr()
    assert (cwd / "runs" / "inside" / "trials.csv").is_file()
    assert {p.parts[0] for p in (Path(f) for f in files(cwd))} == {"runs"}
    assert files(tmp_path / "victim") == set()


# ------------------------------------------------------------------------------ 2. size


def test_a_million_cell_spec_is_refused_before_a_run_is_built(capsys, cwd, tmp_path,
                                                                monkeypatch):
    """Counted from the grids' lengths: not one of the million run configs is built (what
    would take minutes), and nothing is written."""
    from weightdecay.harness import spec as spec_module

    lrs = ", ".join(str(2.0**-k) for k in range(100))
    wds = ", ".join(str(k * 1e-6) for k in range(100))
    seeds = ", ".join(str(k) for k in range(100))
    text = toml("huge", f"seeds = [{seeds}]").replace(
        "lr = [0.001, 0.002]", f"lr = [{lrs}]").replace("weight_decay = [0.0]",
                                                        f"weight_decay = [{wds}]")
    path = spec(tmp_path, text=text)
    built = []
    real = spec_module._config
    monkeypatch.setattr(spec_module, "_config", lambda *a: built.append(a) or real(*a))
    line = refused(capsys, tmp_path, "sweep", path, "--workers", "0")
    assert "1,000,000 runs" in line and "--max-runs" in line
    assert built == []
    assert cli.main(["sweep", spec(tmp_path, name="small"), "--plan-only"]) == 0
    assert built  # the probe sees the run configs a plan builds


def test_max_runs_flag_raises_the_ceiling(capsys, cwd, tmp_path):
    path = spec(tmp_path, name="two")
    refused(capsys, tmp_path, "sweep", path, "--max-runs", "1", needle="2 runs")
    assert cli.main(["sweep", path, "--max-runs", "2", "--workers", "0",
                     "--no-progress"]) == 0


# ------------------------------------------------------------------------------ 3. one line


def test_cuda_device_without_cuda(capsys, cwd, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this torch has CUDA")
    refused(capsys, cwd, "train", "--device", "cuda", needle="not available")
    cuda = spec(tmp_path, extra='device = "cuda"')
    refused(capsys, cwd, "sweep", cuda, "--workers", "0", needle="--plan-only")
    refused(capsys, cwd, "reproduce", "--preset", "cifar10", "--out", "c", needle="cuda")
    assert cli.main(["sweep", cuda, "--plan-only"]) == 0  # planned here, trained elsewhere


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["train", "--seed", "4294967296"], "seed"),
        (["train", "--seed", "-1"], "seed"),
        (["train", "--schedule", "restarts", "--T-0", "1", "--T-mult", "1e300"], "T_mult"),
        (["train", "--T-0", "1e300"], "T_0"),
        (["train", "--epochs", "10000000"], "epochs"),
        (["train", "--drop-factor", "1e300"], "drop_factor"),
        (["train", "--lr", "2**10000"], "--lr"),
        (["train", "--lr", "nan"], "--lr"),
        (["train", "--weight-decay", "0.1", "--weight-decay-norm", "0.1"], "not both"),
        (["train", "--decay-convention", "torch"], "decay_convention"),
        (["sweep", "--optimizers", "sgdw", "--lr=2**10000"], "--lr"),
        (["sweep", "--optimizers", "sgdw", "--lr=1e400"], "--lr"),
        (["sweep", "--optimizers", "sgdw", "--lr=0.1", "--seeds", "4294967296"], "seed"),
        (["train", "--threads", "2147483648"], "--threads"),
        (["sweep", "--optimizers", "sgdw", "--lr=0.1", "--workers", "100000"], "--workers"),
        (["reproduce", "--preset", "quick", "--out", "q", "--workers", "1000"], "--workers"),
        (["worker", "--storage", "sqlite:///x.db", "--study", "s", "--heartbeat-interval",
          "0"], "--heartbeat-interval"),
        (["worker", "--storage", "sqlite:///x.db", "--study", "s", "--grace-period", "-5"],
         "--grace-period"),
    ],
)
def test_out_of_range_numbers(capsys, cwd, argv, needle):
    refused(capsys, cwd, *argv, needle=needle)


def test_library_schedule_is_never_built_from_an_overflowing_config():
    from weightdecay.harness.config import RunConfig

    with pytest.raises(ValueError, match="T_mult"):
        RunConfig(schedule="restarts", T_0=10, T_mult=1e300)
    # the largest accepted factor still evaluates over a long run
    from weightdecay.harness.build import build_schedule

    cfg = RunConfig(schedule="restarts", T_0=1e-3, T_mult=1000.0, epochs=1_000_000)
    schedule = build_schedule(cfg, spe=1000)
    assert 0.0 <= schedule(cfg.epochs * 1000 - 1) <= 1.0


@pytest.mark.parametrize("command", ["sweep", "report", "reproduce", "export"])
@pytest.mark.parametrize("where", ["file", "under-file", "read-only"])
def test_unusable_output_paths(capsys, cwd, tmp_path, monkeypatch, command, where):
    url = store.sqlite_url(cwd / "s.db")
    store.open_storage(url)
    target = cwd / "target"
    if where == "file":
        target.write_text("x")
        if command == "export":
            target.unlink()
            target.mkdir()  # -o names a folder
    elif where == "under-file":
        (cwd / "afile").write_text("x")
        target = cwd / "afile" / "sub"
    else:
        target.mkdir()
        target.chmod(0o555)
        if os.geteuid() == 0:  # root writes anywhere: stand in for a read-only mount
            real, readonly = os.access, target
            monkeypatch.setattr(os, "access", lambda p, mode, **k: False
                                if Path(p) == readonly else real(p, mode, **k))
        if command == "export":
            target = target / "t.csv"
    argv = {
        "sweep": ["sweep", spec(tmp_path), "--out", str(target), "--workers", "0"],
        "report": ["report", "--storage", url, "--study", "x", "--out", str(target)],
        "reproduce": ["reproduce", "--preset", "quick", "--out", str(target)],
        "export": ["export", "--storage", url, "--study", "x", "-o", str(target)],
    }[command]
    try:
        refused(capsys, cwd, *argv, needle=str(target))
    finally:
        if (cwd / "target").is_dir():
            (cwd / "target").chmod(0o755)


def _checkpoint(path: Path, kind: str) -> None:
    from weightdecay.harness.train import run

    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "list":
        torch.save([1, 2, 3], path)
    elif kind in ("truncated", "key-missing", "bad-history"):
        run({"dataset": "digits", "model": "mlp", "epochs": 1}, checkpoint_path=path)
        if kind == "truncated":
            path.write_bytes(path.read_bytes()[:200])
        else:
            ck = torch.load(path, weights_only=True)
            if kind == "key-missing":
                del ck["optimizer"]
            else:
                ck["epoch"] = 0
                ck["history"] = {"epoch": "nonsense"}
            torch.save(ck, path)


@pytest.mark.parametrize("kind", ["empty", "list", "truncated", "key-missing", "bad-history"])
def test_malformed_checkpoints(capsys, cwd, kind):
    path = cwd / "ck.pt"
    _checkpoint(path, kind)
    line = refused(capsys, cwd, "train", "--dataset", "digits", "--model", "mlp", "--epochs",
                   "1", "--checkpoint", str(path), needle="checkpoint")
    assert "ck.pt" in line


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://",
                                 "sqlite:///file:x?mode=memory&uri=true"])
def test_in_memory_sqlite_is_refused(capsys, cwd, tmp_path, url):
    refused(capsys, cwd, "sweep", spec(tmp_path), "--storage", url, "--workers", "0",
            needle="in-memory")
    for command in (["worker"], ["export"], ["report", "--out", "rep"]):
        refused(capsys, cwd, *command, "--storage", url, "--study", "x", needle="in-memory")


def test_spec_files_that_are_not_text_or_too_deep(capsys, cwd, tmp_path):
    latin = tmp_path / "latin.toml"
    latin.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    refused(capsys, cwd, "sweep", str(latin), needle="UTF-8")
    deep = tmp_path / "deep.toml"
    deep.write_text("name = 'deep'\nx = " + "[" * 5000 + "]" * 5000 + "\n")
    refused(capsys, cwd, "sweep", str(deep), needle="deep")
    deep_json = tmp_path / "deep.json"
    deep_json.write_text('{"name": "deep", "x": ' + "[" * 5000 + "]" * 5000 + "}")
    refused(capsys, cwd, "sweep", str(deep_json), needle="deep")
    shallow = tmp_path / "shallow.json"
    shallow.write_text('{"name": "deep", "x": ' + "[" * 20 + "]" * 20 + "}")
    refused(capsys, cwd, "sweep", str(shallow), needle="deep")
    huge_int = tmp_path / "int.toml"
    huge_int.write_text(toml("int", "seeds = [" + "9" * 5000 + "]"))
    refused(capsys, cwd, "sweep", str(huge_int))
    refused(capsys, cwd, "sweep", str(tmp_path), needle="is not a file")
    refused(capsys, cwd, "sweep", str(tmp_path / "nope.toml"), needle="does not exist")


def _write_cifar(folder: Path, bad: str) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, 4)]
        if name == "data_batch_1":
            if bad == "shape":
                data = data.reshape(4, 3, 1024)
            elif bad == "dtype":
                data = data.astype(np.float32)
            elif bad == "labels":
                labels = [0, 1, 2, 10]
            elif bad == "label-count":
                labels = [0, 1]
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": labels}, fh, protocol=2)


@pytest.mark.parametrize("bad", ["shape", "dtype", "labels", "label-count", "missing"])
def test_malformed_cifar10_batches(capsys, cwd, tmp_path, monkeypatch, bad):
    cache = tmp_path / "cache"
    if bad != "missing":
        _write_cifar(cache / "cifar-10-batches-py", bad)
    monkeypatch.setenv("WEIGHTDECAY_CACHE", str(cache))
    refused(capsys, cwd, "train", "--dataset", "cifar10", "--model", "resnet_small",
            needle="cifar10")


# ------------------------------------------------------------------------------ 4. writes


def test_reading_commands_never_create_a_store(capsys, cwd):
    url = store.sqlite_url(cwd / "nope" / "store.db")
    (cwd / "nope").mkdir()
    refused(capsys, cwd, "export", "--storage", url, "--study", "x", needle="does not exist")
    refused(capsys, cwd, "report", "--storage", url, "--study", "x", "--out", "rep",
            needle="does not exist")
    refused(capsys, cwd, "worker", "--storage", url, "--study", "x", needle="does not exist")
    with pytest.raises(store.StoreError):
        store.load_records(url, "x")
    assert not (cwd / "nope" / "store.db").exists()


def test_report_of_a_missing_study_writes_no_folder(capsys, cwd):
    url = store.sqlite_url(cwd / "s.db")
    store.open_storage(url)
    refused(capsys, cwd, "report", "--storage", url, "--study", "ghost", "--out", "rep",
            needle="'ghost'")


def test_unwritable_json_fails_before_training(capsys, cwd, monkeypatch):
    from weightdecay.harness import train

    monkeypatch.setattr(train, "run", lambda *a, **k: pytest.fail("training started"))
    (cwd / "afile").write_text("x")
    refused(capsys, cwd, "train", "--dataset", "digits", "--model", "mlp", "--json",
            "afile/rec.json", needle="--json")
    (cwd / "adir").mkdir()
    refused(capsys, cwd, "train", "--dataset", "digits", "--model", "mlp", "--json", "adir",
            needle="--json")


# ------------------------------------------------------------------------------ 5. exit codes


def test_sweep_and_worker_exit_1_when_runs_fail(capsys, cwd, tmp_path, monkeypatch):
    from weightdecay.harness import train

    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(train, "run", boom)
    path = spec(tmp_path, name="failing")
    assert cli.main(["sweep", path, "--workers", "0", "--no-progress"]) == 1
    out, err = capsys.readouterr()
    assert "2 of 2 runs did not complete" in err and "simulated crash" in err
    assert "Traceback" in err  # the in-process worker shows where it failed

    url = store.sqlite_url(cwd / "runs" / "failing" / "store.db")
    from weightdecay.harness.study import create_sweep

    create_sweep(load(path), url)  # re-enqueue the failed keys
    assert cli.main(["worker", "--storage", url, "--study", "failing", "--no-wait"]) == 1
    out, err = capsys.readouterr()
    assert "2 failed" in out


def load(path: str) -> dict:
    from weightdecay.harness.spec import load_spec

    return load_spec(path)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [("seeds = [4294967296]", "seed"),
     ('T_0 = "abc"', "T_0"),
     ("T_0 = -1", "T_0"),
     ("T_mult = 1e300", "T_mult"),
     ("epochs = [1e300]", "epochs")],
)
def test_spec_values_are_checked_even_where_unused(capsys, cwd, tmp_path, extra, needle):
    text = toml("vals", extra)
    if extra.startswith("epochs"):
        text = text.replace("epochs = [1]\n", "")
    refused(capsys, cwd, "sweep", spec(tmp_path, text=text), "--workers", "0", needle=needle)


def test_a_rerun_says_what_it_waits_for(tmp_path):
    import io

    from weightdecay.harness.local import run_local
    from weightdecay.harness.spec import load_spec
    from weightdecay.harness.study import claim_trial, create_sweep

    url = store.sqlite_url(tmp_path / "store.db")
    sweep = load_spec(spec(tmp_path, name="rerun"))
    create_sweep(sweep, url)
    assert claim_trial(store.open_storage(url), "rerun") is not None  # then "killed"
    stream = io.StringIO()
    run_local(sweep, url, workers=0, out_dir=tmp_path, stream=stream)
    text = stream.getvalue()
    assert "1 run(s) are RUNNING" in text and "no heartbeat for 120 s" in text


# ------------------------------------------------------------------------------ 6. plan-only


def test_plan_only_enqueues_and_prints_the_worker_command(capsys, cwd, tmp_path):
    out = cwd / "planned"
    assert cli.main(["sweep", spec(tmp_path, name="plan"), "--plan-only", "--out",
                     str(out)]) == 0
    text, _ = capsys.readouterr()
    assert "2 runs planned, 2 enqueued; none run here" in text
    url = store.sqlite_url(out / "store.db")
    command = text.strip().splitlines()[-1]
    assert command.startswith(f"weightdecay worker --storage {url} --study plan")
    assert [r["state"] for r in store.load_records(url, "plan")] == ["WAITING"] * 2
    assert not (out / "ckpt").exists() and not (out / "trials.csv").exists()
    argv = command.split()[1:]
    assert cli.main(argv + ["--no-wait"]) == 0
    assert [r["state"] for r in store.load_records(url, "plan")] == ["COMPLETE"] * 2
    # planning again enqueues nothing
    assert cli.main(["sweep", spec(tmp_path, name="plan"), "--plan-only", "--out",
                     str(out)]) == 0
    assert "0 enqueued" in capsys.readouterr()[0]


def test_plan_only_hides_a_password():
    from weightdecay.api import SweepOutcome

    outcome = SweepOutcome("s", "postgresql+psycopg2://u:secret@h/db", Path("x"), None, [],
                           planned_only=True)
    assert "secret" not in outcome.worker_command() and "hidden" in outcome.worker_command()


# ------------------------------------------------------------------------------ 8. seeds


TINY_PRESET = {
    "name": "quick",
    "defaults": {"dataset": "digits", "model": "mlp"},
    "experiments": [
        {"name": "two", "epochs": [1], "seeds": [0, 1],
         "optimizers": [{"optimizer": "sgdw", "lr": [0.05], "weight_decay": [0.0]},
                        {"optimizer": "adamw", "lr": [1e-3], "weight_decay": [0.0],
                         "seeds": [3]}]},
        {"name": "one", "epochs": [1],
         "optimizers": [{"optimizer": "sgdw", "lr": [0.05], "weight_decay": [1e-3]}]},
    ],
}


@pytest.fixture
def tiny_preset(monkeypatch):
    monkeypatch.setitem(presets.PRESETS, "quick", TINY_PRESET)

    def fake_report(storage, study, out=None, **options):
        (Path(out) / "report.html").write_text("<html></html>")
        return Report()

    monkeypatch.setattr(api, "report", fake_report)


def test_reproduce_on_other_seeds(capsys, cwd, tiny_preset):
    out = cwd / "q"
    assert cli.main(["reproduce", "--preset", "quick", "--out", str(out), "--workers", "0",
                     "--no-progress"]) == 0
    assert cli.main(["reproduce", "--preset", "quick", "--seeds", "7,8,9", "--out", str(out),
                     "--workers", "0", "--no-progress"]) == 0
    capsys.readouterr()
    url = store.sqlite_url(out / "store.db")
    original = store.load_records(url, "quick")
    again = store.load_records(url, "quick-seeds-7-8-9")  # every seed given, everywhere
    assert [(r["experiment"], r["optimizer"], r["seed"]) for r in original] == [
        ("two", "sgdw", 0), ("two", "sgdw", 1), ("two", "adamw", 3), ("one", "sgdw", 0)]
    assert [(r["experiment"], r["optimizer"], r["seed"]) for r in again] == [
        (e, o, s) for e, o in (("two", "sgdw"), ("two", "adamw"), ("one", "sgdw"))
        for s in (7, 8, 9)]
    assert all(r["state"] == "COMPLETE" for r in original + again)
    # the design is otherwise the same
    strip = {(r["experiment"], r["optimizer"]): {k: r[k] for k in ("lr", "weight_decay",
                                                                   "epochs", "dataset")}
             for r in original}
    assert all(strip[(r["experiment"], r["optimizer"])] == {
        k: r[k] for k in ("lr", "weight_decay", "epochs", "dataset")} for r in again)
    # the replication writes beside the shared store, never over the original's files
    assert (out / "trials.csv").exists()
    assert (out / "quick-seeds-7-8-9" / "trials.csv").exists()
    import json

    timing = json.loads((out / "quick-seeds-7-8-9" / "reproduce.json").read_text())
    assert timing["study"] == "quick-seeds-7-8-9" and timing["complete"] == 9


@pytest.mark.parametrize(("seeds", "needle"), [("5,5", "twice"), ("-1,2", "seeds=-1"),
                                               ("x", "--seeds"), (",".join(map(str, range(100))),
                                                                  "the study name of these")])
def test_reproduce_seed_errors(capsys, cwd, tiny_preset, seeds, needle):
    refused(capsys, cwd, "reproduce", "--preset", "quick", f"--seeds={seeds}", "--out", "q",
            needle=needle)


def test_a_bad_checkpoint_is_refused_before_the_data_set_is_loaded(capsys, cwd, monkeypatch):
    from weightdecay.harness import build

    monkeypatch.setattr(build, "get_dataset", lambda *a, **k: pytest.fail("data loaded"))
    (cwd / "ck.pt").write_bytes(b"")
    refused(capsys, cwd, "train", "--checkpoint", "ck.pt", needle="checkpoint")


def test_reproduce_into_a_folder_of_an_earlier_version_of_the_preset_says_so(capsys, cwd,
                                                                            tiny_preset):
    """A preset whose design changed (the quick preset's band did) meets the store of the
    earlier one in runs/quick: one line that names the folder and what to do, exit 2."""
    assert cli.main(["reproduce", "--preset", "quick", "--out", "q", "--workers", "0",
                     "--no-progress"]) == 0
    capsys.readouterr()
    changed = copy.deepcopy(TINY_PRESET)
    changed["experiments"][1]["optimizers"][0]["weight_decay"] = [1e-2]
    presets.PRESETS["quick"] = changed
    refused(capsys, cwd, "reproduce", "--preset", "quick", "--out", "q", "--workers", "0",
            needle="another version of the 'quick' preset")
