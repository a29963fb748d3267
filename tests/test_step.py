"""weightdecay.harness.step: the compiled training step against the eager one, determinism
(in a process and across processes), the clean fallback, one compilation per process.

The tests that compile are marked ``compile``; they share one model shape (cnn1d_bn of width
8 on batches of 32) so that a process compiles it once. Resuming with the compiled step is
tested in test_train.py (RESUME_CASES).
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from test_train import BATCH, TOY, _cfg, _same
from weightdecay.harness import step
from weightdecay.harness.models import build_model
from weightdecay.harness.train import run

torch.set_num_threads(1)

COMPILED = _cfg(model="cnn1d_bn", width=8, epochs=2)  # the one compiled shape of this file


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn1d_bn", TOY, channels=8)


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


# ----------------------------------------------------------------------------- contract


@pytest.mark.parametrize("n, b, sizes", [(4000, 128, (128, 32)), (100, 128, (100,)),
                                         (192, 32, (32,)), (256, 128, (128,)), (1, 1, (1,))])
def test_batch_sizes_are_the_full_and_the_last_batch(n, b, sizes):
    assert step.batch_sizes(n, b) == sizes


def test_eager_where_compilation_is_not_asked_for_or_not_measured(monkeypatch):
    monkeypatch.delenv(step.ENV_SWITCH, raising=False)
    model = _model()
    for cfg in (COMPILED.replace(compile=False), COMPILED.replace(model="mlp")):
        assert not step.loss_function(model, cfg, [BATCH], TOY.input_shape).compiled
    monkeypatch.setenv(step.ENV_SWITCH, "0")
    assert not step.loss_function(model, COMPILED, [BATCH], TOY.input_shape).compiled


def test_a_compiled_loss_refuses_a_batch_size_it_was_not_prepared_for():
    model = _model()
    loss = step.LossFunction(model, {BATCH: step._loss})
    x, y = TOY.x_train[:BATCH], TOY.y_train[:BATCH]
    assert torch.equal(loss(x, y), step._loss(model, x, y))
    with pytest.raises(RuntimeError, match="prepared for batches of \\[32\\]"):
        loss(x[:16], y[:16])


def test_no_compile_flag_of_train():
    from weightdecay.cli import build_parser

    args = build_parser().parse_args(["train", "--no-compile"])
    assert args.compile is False
    assert not hasattr(build_parser().parse_args(["train"]), "compile")  # the default: on


# ----------------------------------------------------------------------------- fallback


def _failing_compiler(fail_at_call: int):
    """A stand-in for torch.compile whose compiled function raises at its n-th call (an
    Inductor error while compiling that batch size)."""
    calls = {"n": 0}

    def new_compiled():
        def fn(model, x, y):
            calls["n"] += 1
            if calls["n"] == fail_at_call:
                raise RuntimeError("simulated Inductor error")
            return step._loss(model, x, y)
        return fn
    return new_compiled


@pytest.mark.parametrize("failure", ["inductor error", "second batch size", "unsupported"])
def test_a_failed_compilation_warns_once_and_trains_eagerly_from_then_on(monkeypatch,
                                                                          failure):
    monkeypatch.delenv(step.ENV_SWITCH, raising=False)
    monkeypatch.setattr(step, "_COMPILED", {})
    monkeypatch.setattr(step, "_UNAVAILABLE", [])
    cfg = COMPILED
    if failure == "unsupported":
        import torch._dynamo

        monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    else:
        monkeypatch.setattr(step, "_new_compiled",
                            _failing_compiler(2 if failure == "second batch size" else 1))
    if failure == "second batch size":  # batches of 40 and a last one of 32
        cfg = cfg.replace(batch_size=40)
        assert step.batch_sizes(len(TOY.y_train), 40) == (40, 32)
    with pytest.warns(RuntimeWarning, match="cannot be compiled here.*training eagerly"):
        first = run(cfg, data=TOY)
    assert step.compile_unavailable() is not None
    eager = run(cfg.replace(compile=False), data=TOY)
    assert _same(first, eager)  # the whole run eager: never a mix of the two steps
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: no second warning
        assert _same(run(cfg, data=TOY), eager)


# ----------------------------------------------------------------------------- one compiler


_HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()  # until the test says so
"""


def test_the_compile_lock_makes_a_second_process_wait_for_the_first(tmp_path):
    import threading

    path = str(tmp_path / "cache" / "weightdecay-compile.lock")
    (tmp_path / "cache").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, path], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        got = threading.Event()
        held = []

        def enter():
            with step.compile_lock(path) as ok:
                held.append(ok)
                got.set()

        thread = threading.Thread(target=enter, daemon=True)
        thread.start()
        assert not got.wait(0.5)  # the other process compiles: this one waits
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert got.wait(20), "the lock was not taken after the first process let it go"
        thread.join(5)
        assert held == [True]
    finally:
        holder.kill()
        holder.wait()


def test_the_compile_lock_gives_way_where_the_file_cannot_be_locked(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    link = tmp_path / "weightdecay-compile.lock"
    link.symlink_to(tmp_path / "elsewhere")
    for path in (blocker / "sub" / "weightdecay-compile.lock", link):  # no folder; a link
        with step.compile_lock(str(path)) as ok:
            assert ok is False
    assert not (tmp_path / "elsewhere").exists()  # nothing was created through the link


def test_the_lock_is_taken_only_when_something_is_to_be_compiled(monkeypatch):
    monkeypatch.delenv(step.ENV_SWITCH, raising=False)
    monkeypatch.setattr(step, "_COMPILED", {})
    monkeypatch.setattr(step, "_UNAVAILABLE", [])
    entered = []

    @contextlib.contextmanager
    def lock(path=None):
        entered.append(path)
        yield True

    def fake_compile(model, key):
        fn = step._COMPILED[key] = step._loss
        return fn

    monkeypatch.setattr(step, "compile_lock", lock)
    monkeypatch.setattr(step, "_compile", fake_compile)
    for _ in range(2):  # a second run of the same model in the process: nothing to compile
        assert step.loss_function(_model(), COMPILED, [BATCH], TOY.input_shape).compiled
    assert len(entered) == 1
    step.loss_function(_model(), COMPILED, [BATCH, 16], TOY.input_shape)  # a new batch size
    assert len(entered) == 2


# ----------------------------------------------------------------------------- compiled


@pytest.mark.compile
def test_compiled_step_matches_the_eager_step():
    """Five updates of AdamW through the compiled and the eager step from the same weights:
    the same losses, weights, gradients and BN running statistics up to float rounding."""
    models = {kind: _model() for kind in ("compiled", "eager")}
    losses: dict[str, list[float]] = {kind: [] for kind in models}
    for kind, model in models.items():
        fn = step.loss_function(model, COMPILED.replace(compile=kind == "compiled"), [BATCH],
                                TOY.input_shape)
        assert fn.compiled == (kind == "compiled"), step.compile_unavailable()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
        gen = torch.Generator().manual_seed(0)
        for (x, y), _ in zip(TOY.batches(BATCH, generator=gen), range(5)):
            loss = fn(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses[kind].append(loss.item())
    np.testing.assert_allclose(losses["compiled"], losses["eager"], rtol=1e-5)
    compiled, eager = (dict(models[k].named_parameters()) for k in ("compiled", "eager"))
    for name in eager:
        torch.testing.assert_close(compiled[name], eager[name], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(compiled[name].grad, eager[name].grad, rtol=1e-3, atol=1e-5)
    for (name, a), b in zip(models["compiled"].named_buffers(), models["eager"].buffers()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.compile
def test_compilation_leaves_every_random_state_as_it_was(monkeypatch):
    monkeypatch.setattr(step, "_COMPILED", {})  # compile afresh in this process
    model = _model()
    random.seed(3)
    np.random.seed(3)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    assert step.loss_function(model, COMPILED, [BATCH], TOY.input_shape).compiled
    assert torch.equal(torch.get_rng_state(), before[0])
    assert random.getstate() == before[1]
    assert np.array_equal(np.random.get_state()[1], before[2])


@pytest.mark.compile
def test_runs_of_one_process_compile_once():
    run(COMPILED, data=TOY)  # compiled here, or by an earlier test of this process
    graphs, keys = _graphs(), len(step._COMPILED)
    for cfg in (COMPILED.replace(seed=1), COMPILED.replace(optimizer="sgdw", lr=0.05),
                COMPILED.replace(weight_decay=0.0, schedule="fixed")):
        run(cfg, data=TOY)
    assert (_graphs(), len(step._COMPILED)) == (graphs, keys)


_FRESH = """
import json, sys, torch
from weightdecay.harness.data import Dataset
from weightdecay.harness.config import RunConfig
from weightdecay.harness.train import run
torch.set_num_threads(1)
t = torch.load(sys.argv[1])
def augment(x, generator):
    return x + 0.05 * torch.randn(x.shape, generator=generator)
data = Dataset("mnist1d", t["xtr"], t["ytr"], t["xte"], t["yte"], num_classes=10,
               input_shape=(1, 40), augment=augment)
record = run(RunConfig.from_dict(json.loads(sys.argv[2])), data=data)
record.pop("wall_seconds")
print(json.dumps(record))
"""


@pytest.mark.compile
def test_compiled_runs_are_bit_identical_in_this_and_in_a_fresh_process(tmp_path):
    first, again = run(COMPILED, data=TOY), run(COMPILED, data=TOY)
    assert _same(first, again)
    assert not _same(first, run(COMPILED.replace(compile=False), data=TOY))  # it compiled
    # a fresh process: the kernels come from Inductor's on-disk cache (or are built again)
    torch.save({"xtr": TOY.x_train, "ytr": TOY.y_train, "xte": TOY.x_test,
                "yte": TOY.y_test}, tmp_path / "toy.pt")
    proc = subprocess.run([sys.executable, "-c", _FRESH, str(tmp_path / "toy.pt"),
                           json.dumps(COMPILED.to_dict())],
                          capture_output=True, text=True, check=True)
    fresh = json.loads(proc.stdout.strip().splitlines()[-1])
    assert _same(first, {**fresh, "wall_seconds": 0.0})
