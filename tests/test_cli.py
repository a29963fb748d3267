"""The ``weightdecay`` command line: one-line errors (exit 2), sweeps, export, reproduce."""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from weightdecay import api, cli
from weightdecay.harness import presets, store
from weightdecay.report import html, model
from weightdecay.report.model import Report

torch.set_num_threads(1)

TINY_TOML = """
name = "clitiny"
[defaults]
dataset = "digits"
model = "mlp"
batch_size = 64
[[experiments]]
name = "grid"
figure = "fig2"
epochs = [1]
  [[experiments.optimizers]]
  optimizer = "adamw"
  lr = [0.001, 0.002]
  weight_decay = [0.0]
"""


def fake_write_html(report, out_dir, root=None):
    path = Path(out_dir) / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("<html></html>")
    return path


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("weightdecay: error: ")
    for needle in needles:
        assert needle in lines[0]


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_TOML)
    return path


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["train", "--dataset", "imagenet"], ["--dataset", "imagenet"]),
        (["train", "--model", "vit"], ["--model", "vit"]),
        (["train", "--optimizer", "lion"], ["--optimizer", "lion"]),
        (["train", "--schedule", "cosin"], ["--schedule", "cosin"]),
        (["train", "--lr", "-1"], ["lr"]),
        (["train", "--schedule", "restarts"], ["T_0"]),
        (["train", "--epochs", "x"], ["--epochs"]),
        (["train", "--cautious", "--optimizer", "adam"], ["cautious"]),
        (["train", "--l1", "-1"], ["l1"]),
        (["train", "--test-size", "0"], ["test_size"]),
        (["train", "--model", "mlp", "--scale-invariant-only", "--weight-decay", "0.01",
          "--dataset", "digits", "--epochs", "1"], ["nothing would be decayed"]),
        (["train", "--model", "cnn1d_bn", "--dataset", "digits", "--epochs", "1"],
         ["needs inputs of 2 dims"]),
        (["frobnicate"], ["frobnicate"]),
        (["export", "--storage", "sqlite:///x.db"], ["--study"]),
        (["reproduce", "--preset", "huge", "--out", "x"], ["huge"]),
        (["sweep", "--optimizers", "sgdw", "--lr", "0,0.1", "--weight-decay", "0"], ["lr=0.0"]),
        (["sweep", "--optimizers", "nadam", "--lr", "0.1"], ["'nadam'"]),
        (["sweep", "--optimizers", "sgdw", "--lr", "0.1", "--schedules", "warp"], ["'warp'"]),
        (["sweep"], ["SPEC"]),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, tmp_path, monkeypatch, argv, needles):
    monkeypatch.chdir(tmp_path)
    code, _out, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, *needles)
    assert not list(tmp_path.rglob("*.db"))  # nothing was written


def test_unknown_spec_key_writes_nothing(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY_TOML.replace('figure = "fig2"', 'figure = "fig2"\nlearning_rate = 1'))
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "sweep", str(bad), "--out", str(out))
    assert_one_line_error(code, err, "'learning_rate'")
    assert not out.exists()


def test_missing_spec_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, "sweep", str(tmp_path / "nope.toml"))
    assert_one_line_error(code, err, "nope.toml")


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("postgresql+psycopg2://nobody@127.0.0.1:1/nothing", "cannot connect"),
        ("not a url", "malformed"),
        ("sqlite:////no/such/dir/store.db", "does not exist"),
    ],
)
def test_bad_storage_urls(capsys, tmp_path, spec_file, url, needle):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "sweep", str(spec_file), "--storage", url, "--out", str(out))
    assert_one_line_error(code, err, needle)
    assert not out.exists()
    for argv in (["worker", "--storage", url, "--study", "x"],
                 ["export", "--storage", url, "--study", "x"],
                 ["report", "--storage", url, "--study", "x", "--out", str(out)]):
        code, _, err = run_cli(capsys, *argv)
        assert_one_line_error(code, err, needle)
    assert not out.exists()


def test_unknown_study(capsys, tmp_path):
    url = store.sqlite_url(tmp_path / "s.db")
    store.open_storage(url)  # an existing store without that study
    code, _, err = run_cli(capsys, "export", "--storage", url, "--study", "ghost")
    assert_one_line_error(code, err, "'ghost'")


def test_every_option_has_help():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {"train", "sweep", "worker", "report", "export", "reproduce"}
    for name, p in sub.choices.items():
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"


def test_console_script_exit_code(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "weightdecay.cli", "train", "--optimizer", "lion"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith("weightdecay: error: ")


# ------------------------------------------------------------------------------ commands


def test_train_prints_epochs_and_summary(capsys, tmp_path):
    rec = tmp_path / "rec.json"
    code, out, _ = run_cli(capsys, "train", "--dataset", "digits", "--model", "mlp",
                           "--optimizer", "sgdw", "--lr", "0.05", "--weight-decay", "0.001",
                           "--epochs", "2", "--json", str(rec))
    assert code == 0
    assert "epoch    1/2" in out and "epoch    2/2" in out
    assert "final test error" in out
    data = json.loads(rec.read_text())
    assert data["config"]["optimizer"] == "sgdw" and len(data["history"]["epoch"]) == 2


def test_sweep_export_report(capsys, tmp_path, spec_file, monkeypatch):
    out = tmp_path / "out"
    code, _out, err = run_cli(capsys, "sweep", str(spec_file), "--workers", "0", "--out",
                              str(out), "--no-progress")
    assert code == 0, err
    assert "adamw" in err  # the summary table
    url = store.sqlite_url(out / "store.db")
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE"]

    code, text, _ = run_cli(capsys, "export", "--storage", url, "--study", "clitiny",
                            "--format", "json")
    assert code == 0
    data = json.loads(text)
    assert [d["lr"] for d in data] == [0.001, 0.002]
    dest = tmp_path / "t.csv"
    code, _, _ = run_cli(capsys, "export", "--storage", url, "--study", "clitiny", "-o",
                         str(dest))
    assert code == 0 and dest.read_text().startswith("trial_number,")

    calls = []

    def fake_build_report(records, *, spec=None, versions=None, **options):
        calls.append((records, spec, versions))
        return Report(records=list(records))

    monkeypatch.setattr(model, "build_report", fake_build_report)
    monkeypatch.setattr(html, "write_html", fake_write_html)
    code, text, _ = run_cli(capsys, "report", "--storage", url, "--study", "clitiny",
                            "--out", str(tmp_path / "rep"))
    assert code == 0 and (tmp_path / "rep" / "report.html").exists()
    assert (tmp_path / "rep" / "stats.json").exists()  # the Report's serialization
    records, spec, versions = calls[0]
    assert len(records) == 2 and spec["name"] == "clitiny" and "torch" in versions


def test_sweep_from_flags(capsys, tmp_path):
    out = tmp_path / "flags"
    code, _, err = run_cli(capsys, "sweep", "--name", "fl", "--optimizers", "sgdw,adamw",
                           "--lr", "2**-5", "--weight-decay", "0,2**-10", "--dataset",
                           "digits", "--model", "mlp", "--epochs", "1", "--workers", "0",
                           "--out", str(out), "--no-progress")
    assert code == 0, err
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [(r["optimizer"], float(r["weight_decay"])) for r in rows] == [
        ("sgdw", 0.0), ("sgdw", 2**-10), ("adamw", 0.0), ("adamw", 2**-10)
    ]
    assert {r["state"] for r in rows} == {"COMPLETE"}


def test_reproduce_writes_report_and_resumes(capsys, tmp_path, monkeypatch):
    tiny = {
        "name": "quick",
        "defaults": {"dataset": "digits", "model": "mlp"},
        "experiments": [{"name": "fig2", "figure": "fig2", "epochs": [1], "optimizers": [
            {"optimizer": "sgdw", "lr": [0.05], "weight_decay": [0.0, 0.001]}]}],
    }
    monkeypatch.setitem(presets.PRESETS, "quick", tiny)
    written = []

    def fake_report(storage, study, out=None, **options):
        written.append(len(store.load_records(storage, study)))
        fake_write_html(None, out)
        return Report()

    monkeypatch.setattr(api, "report", fake_report)
    out = tmp_path / "q"
    code, text, err = run_cli(capsys, "reproduce", "--preset", "quick", "--out", str(out),
                              "--workers", "0", "--no-progress")
    assert code == 0, err
    assert (out / "store.db").exists() and (out / "report.html").exists()
    assert len(list(csv.DictReader((out / "trials.csv").open()))) == 2
    assert "2 enqueued" in err

    code, text, err = run_cli(capsys, "reproduce", "--preset", "quick", "--out", str(out),
                              "--workers", "0", "--no-progress")
    assert code == 0
    assert "2 already complete, 0 enqueued" in err
    assert len(list(csv.DictReader((out / "trials.csv").open()))) == 2
    assert written == [2, 2]
    timing = json.loads((out / "stats.json").read_text())["timing"]  # kept from the first run
    assert timing == json.loads((out / "reproduce.json").read_text()) and timing["ran"] == 2


def test_download_flag_fetches_cifar10_before_training(capsys, monkeypatch):
    """--download is wired to the checksum-verified CIFAR-10 download (never run in tests:
    the download itself is replaced by a stand-in that stops the command)."""
    from weightdecay.harness import cifar10

    calls = []

    class Stop(Exception):
        pass

    def fake_download(*args, **kwargs):
        calls.append(1)
        raise Stop

    monkeypatch.setattr(cifar10, "download_cifar10", fake_download)
    with pytest.raises(Stop):
        cli.main(["train", "--dataset", "cifar10", "--model", "resnet_small", "--download"])
    assert calls == [1]
    # not for other data sets
    monkeypatch.setattr(cifar10, "download_cifar10", lambda *a, **k: calls.append(2))
    assert cli.main(["train", "--dataset", "digits", "--model", "mlp", "--epochs", "1",
                     "--download"]) == 0
    assert calls == [1]
