"""The store and the output folder under hostile but realistic conditions: paths with URL
characters, another program's study of the same name, ``export -o`` at the store, links
planted in ``--out``, stores of other versions, worker timing flags, and an export that
keeps every RunConfig field with its type. Each refusal is one line and exit code 2, with
nothing written outside ``--out`` and nothing lost."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import shutil
from pathlib import Path

import optuna
import pytest
import torch

from weightdecay import cli
from weightdecay._io import UnsafePathError
from weightdecay.harness import store
from weightdecay.harness.config import RunConfig
from weightdecay.harness.local import run_local
from weightdecay.harness.records import EXPORT_COLUMNS
from weightdecay.harness.study import create_sweep
from weightdecay.harness.worker import run_worker

torch.set_num_threads(1)
optuna.logging.set_verbosity(optuna.logging.WARNING)

GRID = ["--dataset", "digits", "--model", "mlp", "--optimizers", "sgdw", "--lr", "0.05",
        "--epochs", "1", "--batch-size", "64", "--no-progress"]


def spec(name: str, **exp) -> dict:
    return {"name": name, "defaults": {"dataset": "digits", "model": "mlp", "batch_size": 64},
            "experiments": [{"name": "grid", "epochs": [1], **exp, "optimizers": [
                {"optimizer": "sgdw", "lr": [0.05], "weight_decay": [0.0]}]}]}


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a hash of its bytes (links as their target)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p)] = "-> " + os.readlink(p)
        elif p.is_file():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def one_error_line(capsys, code: int, expect: int = 2) -> str:
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == expect, err
    assert len(lines) == 1 and lines[0].startswith("weightdecay: error: "), err
    assert "Traceback" not in out + err
    return lines[0]


# ------------------------------------------------------------------------------ URLs

HOSTILE = ["a?b", "c#d", "100%", "e%41f", "sp ace", "tr ", "é漢", "{SCHEMA_VERSION}",
           "x;y@z:w=1&m=memory", "+plus", ":memory:", "file:x", "new\nline"]


@pytest.mark.parametrize("name", HOSTILE)
def test_a_store_url_names_exactly_its_path(tmp_path, name):
    import sqlalchemy

    folder = tmp_path / name
    folder.mkdir()
    path = folder / "store.db"
    url = store.sqlite_url(path)
    assert store.sqlite_path(url) == path.resolve()
    store.check_storage(url)
    # what Optuna does with the URL: str.format (its schema template), then SQLAlchemy
    engine = sqlalchemy.create_engine(url.format(SCHEMA_VERSION="x"))
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    engine.dispose()
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert [p.name for p in folder.iterdir()] == ["store.db"]


def test_a_store_lands_exactly_at_a_path_of_every_hostile_character(tmp_path):
    folder = tmp_path / "".join(HOSTILE)
    folder.mkdir()
    url = store.sqlite_url(folder / "store.db")
    with store.sweep_lock(url, "s"):
        optuna.create_study(study_name="s", storage=store.open_storage(url))
    assert sorted(p.name for p in folder.iterdir()) == ["store.db", "store.db.lock"]
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]
    assert store.study_names(url) == ["s"]


def test_a_typed_url_whose_path_would_end_at_a_question_mark_is_refused(capsys, tmp_path):
    for url in (f"sqlite:///{tmp_path}/we?ird/store.db", f"sqlite:///{tmp_path}/a?b=c/s.db"):
        line = one_error_line(capsys, cli.main(["sweep", *GRID, "--workers", "0",
                                                "--storage", url, "--out", str(tmp_path)]))
        assert "%3F" in line
    assert list(tmp_path.iterdir()) == []
    # braces are no template (Optuna formats its URL): the store lands at the path typed
    url = f"sqlite:///{tmp_path}/{{SCHEMA_VERSION}}-{{x}}.db?timeout=5"
    optuna.create_study(study_name="s", storage=store.open_storage(url))
    assert (tmp_path / "{SCHEMA_VERSION}-{x}.db").is_file()


def test_a_sweep_into_a_folder_of_url_characters_writes_only_there(capsys, tmp_path):
    out = tmp_path / "runs?x=1#frag %41 é"
    code = cli.main(["sweep", *GRID, "--workers", "0", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]
    assert {"store.db", "trials.csv"} <= {p.name for p in out.iterdir()}
    (row,) = csv.DictReader(io.StringIO((out / "trials.csv").read_text()))
    assert row["state"] == "COMPLETE"


# ------------------------------------------------------------------------------ studies


def foreign_study(url: str, name: str) -> optuna.Study:
    """Another program's study: a finished trial and a queued one, its own attributes."""
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    study.set_user_attr("owner", "someone else")
    study.enqueue_trial({"x": 1.0})
    study.add_trial(optuna.trial.create_trial(
        params={"x": 2.0}, distributions={"x": optuna.distributions.FloatDistribution(0, 3)},
        value=0.5))
    return study


def snapshot(url: str, name: str):
    study = optuna.load_study(study_name=name, storage=url)
    return (dict(study.user_attrs),
            [(t.number, t.state.name, t.params, t.value, t.user_attrs) for t in study.trials])


def test_another_programs_study_under_the_default_name_is_refused(capsys, tmp_path):
    """`weightdecay sweep` with grid flags names its study 'sweep': a shared store's study of
    that name is not taken over (its queued trial is neither run nor failed)."""
    url = store.sqlite_url(tmp_path / "shared.db")
    foreign_study(url, "sweep")
    before = snapshot(url, "sweep")
    out = tmp_path / "out"
    line = one_error_line(capsys, cli.main(["sweep", *GRID, "--storage", url, "--out",
                                            str(out), "--workers", "0"]))
    assert "was not created by weightdecay" in line and "--adopt-study sweep" in line
    assert snapshot(url, "sweep") == before
    for argv in (["--plan-only"], ["--workers", "0", "--adopt-study", "other"]):
        one_error_line(capsys, cli.main(["sweep", *GRID, "--storage", url, *argv]))
        assert snapshot(url, "sweep") == before
    line = one_error_line(capsys, cli.main(["worker", "--storage", url, "--study", "sweep",
                                            "--out", str(out), "--no-wait"]))
    assert "not created by weightdecay" in line
    assert snapshot(url, "sweep") == before


def test_a_study_adopted_on_purpose_keeps_its_own_trials(capsys, tmp_path):
    url = store.sqlite_url(tmp_path / "shared.db")
    foreign_study(url, "sweep")
    _, trials_before = snapshot(url, "sweep")
    code = cli.main(["sweep", *GRID, "--storage", url, "--out", str(tmp_path / "out"),
                     "--workers", "0", "--adopt-study", "sweep"])
    assert code == 0, capsys.readouterr().err
    attrs, trials = snapshot(url, "sweep")
    assert trials[:2] == trials_before  # the queued trial is still queued, untouched
    assert [t[1] for t in trials[2:]] == ["COMPLETE"] and attrs["owner"] == "someone else"
    assert attrs[store.STUDY_MARK]["adopted"] is True
    # adopted once, it is weightdecay's: the same command needs no flag again
    assert cli.main(["sweep", *GRID, "--storage", url, "--out", str(tmp_path / "out"),
                     "--workers", "0"]) == 0


def test_a_study_of_an_older_version_without_the_mark_is_still_ours(tmp_path):
    url = store.sqlite_url(tmp_path / "s.db")
    plan_spec = spec("old")
    study = optuna.create_study(study_name="old", storage=url)
    from weightdecay.harness.spec import validate_spec

    study.set_user_attr("spec", validate_spec(plan_spec))
    study.set_user_attr("versions", {"weightdecay": "0.0.9"})
    assert create_sweep(plan_spec, url).enqueued == 1
    assert run_worker(url, "old", out_dir=tmp_path, wait=False, log=lambda _: None).completed


# ------------------------------------------------------------------------------ export


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A store holding the study 'ex': one run, complete."""
    folder = tmp_path_factory.mktemp("template")
    url = store.sqlite_url(folder / "store.db")
    create_sweep(spec("ex"), url)
    run_worker(url, "ex", out_dir=folder, wait=False, log=lambda _: None)
    return folder / "store.db"


@pytest.fixture
def swept(tmp_path, template):
    """(folder, URL) of a copy of the template store."""
    shutil.copyfile(template, tmp_path / "store.db")
    return tmp_path, store.sqlite_url(tmp_path / "store.db")


@pytest.mark.parametrize("how", ["same", "dotdot", "symlink", "hardlink", "journal", "lock"])
def test_export_never_overwrites_the_store_it_reads(capsys, swept, how):
    tmp_path, url = swept
    db = tmp_path / "store.db"
    target = {"same": db, "dotdot": tmp_path / "ckpt" / ".." / "store.db",
              "symlink": tmp_path / "link.csv", "hardlink": tmp_path / "hard.csv",
              "journal": tmp_path / "store.db-journal", "lock": tmp_path / "store.db.lock"}[how]
    if how == "symlink":
        target.symlink_to(db)
    elif how == "hardlink":
        os.link(db, target)
    before = db.read_bytes()
    line = one_error_line(capsys, cli.main(["export", "--storage", url, "--study", "ex",
                                            "-o", str(target)]))
    assert "is the store" in line
    assert db.read_bytes() == before
    assert len(store.load_records(url, "ex")) == 1


def test_the_export_keeps_every_config_field_with_its_type(swept):
    tmp_path, url = swept
    study = optuna.load_study(study_name="ex", storage=url)
    (done,) = study.get_trials()
    variant = {**done.user_attrs["config"], "cautious": True, "milestones": [1, 2],
               "schedule": "step", "momentum": 0.5, "eval_every": 2, "test_size": None}
    study.add_trial(optuna.trial.create_trial(value=0.25, user_attrs={
        **done.user_attrs, "config": variant, "key": "0123456789abcdef", "num_test": 360}))
    rows = json.loads(store.export_trials(url, "ex", "json"))
    assert list(rows[0]) == list(EXPORT_COLUMNS)
    assert set(RunConfig.field_names()) <= set(EXPORT_COLUMNS)
    first, second = rows
    assert first["num_test"] == 360 and type(first["num_test"]) is int
    assert type(first["epochs"]) is int and type(first["lr"]) is float
    assert first["cautious"] is False and second["cautious"] is True
    assert second["milestones"] == [1, 2] and second["eval_every"] == 2
    text = store.export_trials(url, "ex", "csv", tmp_path / "t.csv")
    csv_rows = list(csv.DictReader(io.StringIO(text)))
    assert csv_rows[0]["num_test"] == "360" and csv_rows[1]["milestones"] == "[1, 2]"
    assert {r["cautious"] for r in csv_rows} == {"False", "True"}  # the variants differ
    assert (tmp_path / "t.csv").read_text() == text


# ------------------------------------------------------------------------------ other versions


def test_a_store_of_another_version_is_read_where_it_can_be(capsys, caplog, swept):
    tmp_path, url = swept
    study = optuna.load_study(study_name="ex", storage=url)
    (done,) = study.get_trials()
    newer = {**done.user_attrs["config"], "nesterov": True}
    broken = {**done.user_attrs["config"], "optimizer": "lion"}
    for i, config in enumerate((newer, broken)):
        study.add_trial(optuna.trial.create_trial(value=0.1, user_attrs={
            **done.user_attrs, "config": config, "key": f"{i:016x}", "num_test": 360.0}))
    with caplog.at_level(logging.WARNING, logger="weightdecay.harness.store"):
        records = store.load_records(url, "ex")
    assert [r.get("unknown_config") for r in records] == [None, {"nesterov": True}]
    assert records[1]["num_test"] == 360  # an older store's float count reads as an int
    (note,) = caplog.messages
    assert "nesterov" in note and "lion" in note and "\n" not in note

    out = tmp_path / "export.csv"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="weightdecay.harness.store"):
        code = cli.main(["export", "--storage", url, "--study", "ex", "-o", str(out)])
    _, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in err
    (note,) = caplog.messages  # one line (on stderr when logging is not configured)
    assert "nesterov" in note and "exported as stored" in note and "\n" not in note
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["nesterov"] for r in rows] == ["", "True", ""]
    assert [r["optimizer"] for r in rows] == ["sgdw", "sgdw", "lion"]  # exported as stored


def test_a_worker_hands_another_versions_trial_back_untouched(swept):
    tmp_path, url = swept
    study = optuna.load_study(study_name="ex", storage=url)
    (done,) = study.get_trials()
    study.enqueue_trial({}, user_attrs={**done.user_attrs, "key": "00000000000000aa",
                                        "config": {**done.user_attrs["config"], "nesterov": 1}})
    lines: list[str] = []
    result = run_worker(url, "ex", out_dir=tmp_path, wait=False, log=lines.append)
    assert (result.ran, result.failed) == (0, 0)
    states = [t.state.name for t in optuna.load_study(study_name="ex", storage=url).trials]
    assert states == ["COMPLETE", "WAITING"]
    assert any("handed back untouched" in line and "nesterov" in line for line in lines)


@pytest.mark.parametrize(("beat", "grace"), [("10", "15"), ("20", "20"), ("5", "1")])
def test_worker_timing_flags_are_checked_against_each_other(capsys, swept, beat, grace):
    tmp_path, url = swept
    line = one_error_line(capsys, cli.main([
        "worker", "--storage", url, "--study", "ex", "--no-wait", "--heartbeat-interval", beat,
        "--grace-period", grace]))
    assert "--grace-period" in line and "at least twice" in line


# ------------------------------------------------------------------------------ links in --out


PLANTED = ["trials.csv", "logs/worker-0.log", "logs", "ckpt", "ckpt/KEY.pt", "store.db",
           "store.db.lock"]


@pytest.mark.parametrize("where", PLANTED)
def test_a_link_planted_in_out_is_refused_and_nothing_is_written_through_it(
        capsys, tmp_path, where):
    from weightdecay.harness.spec import plan_sweep

    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (outside / "victim").write_text("precious")
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec("planted")))
    key = plan_sweep(spec("planted")).runs[0].key
    link = out / where.replace("KEY", key)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside if where in ("logs", "ckpt") else outside / "victim")
    before = tree(tmp_path)
    line = one_error_line(capsys, cli.main(["sweep", str(spec_file), "--workers", "1",
                                            "--no-progress", "--out", str(out)]))
    assert "symbolic link" in line
    assert tree(tmp_path) == before  # refused before anything is written


def test_a_remote_workers_planted_checkpoint_link_hands_the_trial_back(swept):
    tmp_path, url = swept
    create_sweep(spec("ex2"), url)
    (run,) = store.load_records(url, "ex2")
    ckpt = tmp_path / "ckpt" / f"{run['key']}.pt"
    ckpt.parent.mkdir()
    outside = tmp_path.parent / f"{tmp_path.name}-outside.pt"
    outside.write_bytes(b"precious")
    ckpt.symlink_to(outside)
    with pytest.raises(UnsafePathError):
        run_worker(url, "ex2", out_dir=tmp_path, wait=False, log=lambda _: None)
    assert outside.read_bytes() == b"precious"
    assert [r["state"] for r in store.load_records(url, "ex2")] == ["WAITING"]
    ckpt.unlink()
    outside.unlink()


def test_the_link_checks_are_in_the_harness(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "store.db").symlink_to(tmp_path / "elsewhere.db")
    with pytest.raises(UnsafePathError):
        store.sqlite_url(out / "store.db", root=out)
    (out / "sub").symlink_to(tmp_path)  # reproduce --seeds writes to OUT/<study>
    with pytest.raises(UnsafePathError):
        run_local(spec("l"), store.sqlite_url(tmp_path / "s.db"), workers=0, progress=False,
                  out_dir=out / "sub", root=out, stream=io.StringIO())
    assert not (tmp_path / "elsewhere.db").exists() and not (tmp_path / "s.db").exists()


def test_a_pipe_or_device_is_written_into_never_replaced(tmp_path, swept):
    """`export -o /dev/stdout` (or a named pipe): the text goes into it; an atomic replace
    would put a regular file where the device was (as root, even /dev/null)."""
    import stat
    import threading

    from weightdecay._io import write_atomic

    _, url = swept
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    text = store.export_trials(url, "ex", "csv", fifo)
    reader.join(10)
    assert got == [text] and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    with pytest.raises(UnsafePathError, match="not a regular file"):  # planted in --out
        write_atomic(fifo, "x", root=tmp_path)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    # a pipe planted at a worker's log would block the worker forever: refused up front
    (tmp_path / "logs").mkdir()
    os.mkfifo(tmp_path / "logs" / "worker-0.log")
    with pytest.raises(UnsafePathError, match="not a regular file"):
        run_local(spec("ex"), url, workers=1, out_dir=tmp_path, progress=False,
                  stream=io.StringIO())
