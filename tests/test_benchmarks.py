"""The benchmark scripts' parsing, and the committed tables they render (never typed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TIME_V = """\tCommand being timed: "python -m weightdecay.cli reproduce --preset quick"
\tUser time (seconds): 409.02
\tSystem time (seconds): 11.52
\tPercent of CPU this job got: 182%
\tElapsed (wall clock) time (h:mm:ss or m:ss): 3:50.61
"""


def test_time_v_output_is_parsed_into_cpu_and_wall_seconds(tmp_path):
    cost = _module("bench_quick_cost")
    path = tmp_path / "arm.time"
    path.write_text(TIME_V)
    t = cost.parse(path)
    assert t["cpu"] == pytest.approx(420.54) and t["wall"] == pytest.approx(230.61)
    path.write_text("\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:02:03\n")
    with pytest.raises(SystemExit, match="no 'user' line"):
        cost.parse(path)
    assert cost._seconds("1:02:03") == 3723


def test_the_committed_cost_table_is_what_the_raw_measurements_render():
    cost = _module("bench_quick_cost")
    committed = cost.OUT.read_text(encoding="utf-8")
    assert cost.render() == committed
    before = cost.parse(cost.RAW / "before.time")
    cold = cost.parse(cost.RAW / "after-cold.time")
    assert f"| {cold['cpu'] / before['cpu']:.2f} |" in committed


def test_the_compile_lock_table_gives_medians_and_ratios_to_the_arm_without_it():
    lock = _module("bench_compile_lock")
    text = lock.table({False: [(40.0, 30.0), (36.0, 28.0), (38.0, 90.0)],
                       True: [(30.0, 33.0), (19.0, 31.0), (28.5, 29.0)]}, 2, "a machine")
    assert "medians of 3 alternating repetitions" in text and "Machine: a machine." in text
    assert "| each process compiles (no lock) | 38.0 | 30.0 | 1.00 | 1.00 |" in text
    assert "| one compiles, the others wait and load (the lock) | 28.5 | 31.0 | 0.75 | 1.03 |" \
        in text
    committed = (ROOT / "docs" / "results" / "bench_compile_lock.txt").read_text()
    assert committed.startswith("2 processes preparing the compiled training step")


def test_the_step_benchmark_rows_are_recognized():
    compare = _module("bench_optim_compare")
    lines = (ROOT / "docs" / "results" / "bench_optim.txt").read_text().splitlines()
    rows = [m for m in map(compare._ROW.match, lines) if m]
    names = {m[3] for m in rows}
    assert set(compare.CONTENDERS) <= names
    assert all(float(m[5]) > 0 and float(m[7]) > 0 for m in rows)


def test_the_status_benchmark_agrees_with_a_full_read_and_writes_its_table(tmp_path,
                                                                         monkeypatch):
    status = _module("bench_status")
    out = tmp_path / "status.txt"
    monkeypatch.setattr("sys.argv", ["bench_status.py", "--sizes", "12", "--repeats", "1",
                                     "--out", str(out)])
    assert status.main() == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| 12 |")]
    assert len(rows) == 1 and rows[0].count("|") == 7
