"""Property-based: generated command lines and TOML specs (wrong types, huge and non-finite
numbers, odd strings and names, deep nesting) thrown at every command.

The property: the exit code is 0 or 2, there is never a traceback, an exit 2 prints one
line and writes nothing, and no command writes outside its working folder. Commands run
in-process (``weightdecay.cli.main``) in a fresh folder per example; training, the HTML
report and the presets are replaced by small stand-ins (the run config is still validated
and its eta_t schedule evaluated at the last update), so that an accepted command
finishes in well under a second. ``derandomize=True`` and fixed ``max_examples`` keep the
run reproducible and under a minute.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weightdecay import cli
from weightdecay.harness import presets

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])

TINY_PRESET = {
    "name": "tiny",
    "defaults": {"dataset": "digits", "model": "mlp"},
    "experiments": [{"name": "e", "epochs": [1], "seeds": [0, 1], "optimizers": [
        {"optimizer": "sgdw", "lr": [0.05], "weight_decay": [0.0]}]}],
}


def fake_run(config, checkpoint_path=None, progress=False, on_epoch=None, data=None):
    """Stands in for training: validates the config, builds its schedule in updates and
    evaluates it at the run's last update (the arithmetic a real run would do first)."""
    from weightdecay.harness.build import build_schedule
    from weightdecay.harness.config import RunConfig

    if not isinstance(config, RunConfig):
        config = RunConfig.from_dict(config)
    spe = 32
    eta = build_schedule(config, spe)(config.epochs * spe - 1)
    assert math.isfinite(eta)
    history = {"epoch": [1], "train_loss": [0.5], "test_error": [0.25], "weight_norm": [1.0],
               "eta": [eta], "effective_decay": [0.0]}
    return {"final_test_error": 0.25, "best_test_error": 0.25, "final_train_loss": 0.5,
            "diverged": False, "wall_seconds": 0.01, "num_test": 4,
            "final_test_wrong": "8A==", "history": history}


def fake_write_html(report, out_dir, root=None):
    path = Path(out_dir) / "report.html"
    path.write_text("<html></html>")
    return path


@pytest.fixture
def stand_ins(monkeypatch):
    from weightdecay.harness import build, train
    from weightdecay.report import html, model

    monkeypatch.setattr(train, "run", fake_run)
    monkeypatch.setattr(model, "build_report", lambda records, **kw: model.Report())
    monkeypatch.setattr(html, "write_html", fake_write_html)
    monkeypatch.setattr(build, "get_dataset", lambda *a, **k: None)
    for name in list(presets.PRESETS):
        monkeypatch.setitem(presets.PRESETS, name, {**TINY_PRESET, "name": name})
    cwd, threads = os.getcwd(), torch.get_num_threads()
    yield
    os.chdir(cwd)
    torch.set_num_threads(threads)  # `train --threads N` sets it for this process


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1)
            for p in root.rglob("*")}


def check(argv: list[str], inputs: dict[str, bytes] | None = None) -> int:
    """Run ``argv`` in a fresh sandbox/work folder (inputs in sandbox/in); assert the
    property; return the exit code."""
    sandbox = Path(tempfile.mkdtemp(prefix="wd-fuzz-"))
    try:
        work, given_dir = sandbox / "work", sandbox / "in"
        work.mkdir()
        given_dir.mkdir()
        for name, data in (inputs or {}).items():
            (given_dir / name).write_bytes(data)
        argv = [a.replace("@IN@", str(given_dir)) for a in argv]
        os.chdir(work)
        before = snapshot(sandbox)
        out, err = io.StringIO(), io.StringIO()
        threads = torch.get_num_threads()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)
        torch.set_num_threads(threads)
        err_text = err.getvalue()
        assert code in (0, 2), (argv, code, err_text[-2000:])
        assert "Traceback" not in err_text + out.getvalue(), (argv, err_text[-3000:])
        after = snapshot(sandbox)
        outside = {p for p in after if not p.startswith("work")} - set(before)
        assert not outside, (argv, outside)  # nothing beside the working folder
        if code == 2:
            lines = err_text.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("weightdecay: error: "), \
                (argv, err_text)
            assert after == before, (argv, set(after) - set(before))
        return code
    finally:
        os.chdir(sandbox.parent)
        shutil.rmtree(sandbox, ignore_errors=True)


# ------------------------------------------------------------------------------ values

ODD_NUMBERS = ["2**10000", "1e400", "-1e400", "nan", "inf", "-0", "2**-10", "0x10", "",
               "1,2", "abc", "1e-400", "4294967296", "9" * 5000, "1_000", " 3 ", "2**0.5",
               "(-8)**(1/3)", "0**-1", "-2**0.5"]
ODD_NAMES = ["../../victim", "/tmp/wd-fuzz-victim", "a/b", "..", ".", "quick", "ok", "-x",
             "", " ", "a" * 300, "ünï", "x\x00y", "$(touch pwned)", "runs", "tiny"]

numbers = st.one_of(
    st.integers(-10**20, 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(ODD_NUMBERS),
)
names = st.one_of(st.text(max_size=12), st.sampled_from(ODD_NAMES))
values = st.one_of(numbers, names)

RUN_FLAGS = ["--dataset", "--model", "--optimizer", "--lr", "--weight-decay",
             "--weight-decay-norm", "--decay-convention", "--schedule", "--T-0", "--T-mult",
             "--milestones", "--drop-factor", "--epochs", "--batch-size", "--seed",
             "--device", "--momentum", "--width", "--test-size", "--eval-every"]
GOOD = {"--dataset": ["digits"], "--model": ["mlp"], "--optimizer": ["sgdw", "adam"],
        "--preset": ["quick", "full"], "--optimizers": ["sgdw,adamw"], "--format": ["json"],
        "--schedule": ["cosine", "restarts", "step"], "--epochs": ["1", "2"],
        "--lr": ["0.01", "2**-5"], "--T-0": ["0.5", "1"], "--seed": ["0", "4294967295"]}
FLAGS = {
    "train": RUN_FLAGS + ["--checkpoint", "--json", "--threads", "--no-decay-all"],
    "sweep": ["--storage", "--study", "--workers", "--out", "--max-runs", "--name",
              "--figure", "--dataset", "--model", "--optimizers", "--lr", "--weight-decay",
              "--weight-decay-norm", "--schedules", "--epochs", "--seeds", "--batch-size",
              "--T-0", "--plan-only"],
    "worker": ["--storage", "--study", "--out", "--max-trials", "--threads",
               "--heartbeat-interval", "--grace-period", "--no-wait"],
    "report": ["--storage", "--study", "--out"],
    "export": ["--storage", "--study", "--format", "-o"],
    "reproduce": ["--preset", "--out", "--seeds", "--workers"],
}
SWITCHES = {"--no-decay-all", "--plan-only", "--no-wait"}
STORAGES = ["sqlite:///store.db", "sqlite:///:memory:", "sqlite:///runs/x/store.db",
            "sqlite:////nonexistent-dir/s.db", "postgresql://nobody@127.0.0.1:1/x",
            "not a url", "sqlite:///../escape.db", "mysql://"]


@st.composite
def command_lines(draw) -> list[str]:
    command = draw(st.sampled_from(sorted(FLAGS)))
    argv = [command]
    if command == "reproduce" and draw(st.booleans()):
        argv += ["--preset=quick", "--out=o"]
    for flag in draw(st.lists(st.sampled_from(FLAGS[command]), max_size=6)):
        if flag in SWITCHES:
            argv.append(flag)
            continue
        if flag == "--storage":
            value = draw(st.sampled_from(STORAGES))
        elif flag in GOOD and draw(st.booleans()):
            value = draw(st.sampled_from(GOOD[flag]))
        else:
            value = draw(values)
        argv.append(f"{flag}={value}")
    if command in ("sweep", "reproduce", "worker"):
        argv.append("--workers=0" if command != "worker" else "--no-wait")
    if command == "sweep" and draw(st.booleans()):
        argv.insert(1, "@IN@/spec.toml")
    return argv


# ------------------------------------------------------------------------------ specs

scalars = st.one_of(
    st.integers(-10**30, 10**30), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.text(max_size=8), st.sampled_from(ODD_NAMES),
)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) \
            else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


def nested(depth: int):
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=depth)


ENTRY_KEYS = ["optimizer", "lr", "weight_decay", "weight_decay_norm", "schedules", "epochs",
              "seeds", "batch_size", "T_0", "T_mult", "milestones", "drop_factor", "width",
              "eval_every", "test_size", "momentum", "decay_all", "device", "bogus"]


GOOD_SPEC = {"schedules": [["cosine", "restarts"], "step", ["linear"]], "T_0": [1, 0.5],
             "T_mult": [1.0, 2.0, 1000.0], "seeds": [[0], [4294967295]], "epochs": [[1], 2],
             "batch_size": [[64], 32], "width": [8], "eval_every": [1, 2],
             "milestones": [[1], [0.5, 1.5]], "drop_factor": [0.5, 1.0], "momentum": [0.0],
             "decay_all": [False], "optimizer": ["adam"], "weight_decay_norm": [[0.1]]}


@st.composite
def specs(draw) -> str:
    entry = {"optimizer": draw(st.sampled_from(["sgdw", "adamw", "lion"])),
             "lr": draw(st.one_of(st.just([0.05]), nested(4))),
             "weight_decay": draw(st.one_of(st.just([0.0]), nested(4)))}
    for key in draw(st.lists(st.sampled_from(ENTRY_KEYS), max_size=3)):
        good = GOOD_SPEC.get(key)
        entry[key] = draw(st.sampled_from(good) if good and draw(st.booleans()) else nested(6))
    experiment = {"name": draw(st.one_of(st.just("e"), names)), "epochs": [1],
                  "optimizers": [entry]}
    if draw(st.booleans()):
        experiment["seeds"] = draw(st.one_of(st.just([0, 1]), nested(4)))
    spec = {"name": draw(st.one_of(st.just("fz"), names)),
            "defaults": {"dataset": "digits", "model": "mlp"}, "experiments": [experiment]}
    lines = []
    for key, value in spec.items():
        lines.append(f"{key} = {toml_value(value)}")
    text = "\n".join(lines) + "\n"
    depth = draw(st.sampled_from([0, 0, 0, 40, 5000]))
    if depth:
        text += "deep = " + "[" * depth + "]" * depth + "\n"
    return text


# ------------------------------------------------------------------------------ the tests


@SETTINGS
@given(argv=command_lines(), spec_text=specs())
def test_generated_command_lines(stand_ins, argv, spec_text):
    check(argv, {"spec.toml": spec_text.encode()})


@SETTINGS
@given(spec_text=specs(), raw=st.one_of(st.none(), st.binary(max_size=64)))
def test_generated_specs(stand_ins, spec_text, raw):
    data = raw if raw is not None else spec_text.encode()
    check(["sweep", "@IN@/spec.toml", "--workers", "0", "--no-progress"], {"spec.toml": data})
