"""Packaging: the core install (torch + numpy) and the ``harness`` extra.

Without the harness extra, ``import weightdecay`` and the optimizers work, and every command
of the CLI exits 2 with one line naming ``pip install 'weightdecay[harness]'``, before it
writes anything. A missing module is simulated here with ``sys.modules[name] = None`` (what
``importlib.util.find_spec`` reports as absent); ``.ci/run`` repeats the check for real in a
venv that has only the wheel, torch and numpy (``.ci/wheel_smoke.sh``).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from weightdecay import api, cli

ROOT = Path(__file__).resolve().parents[1]

# distribution name (pyproject) -> import name
_IMPORT_NAME = {"scikit-learn": "sklearn", "sqlalchemy": "sqlalchemy"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_cli_checks_exactly_the_harness_extra():
    extra = _pyproject()["project"]["optional-dependencies"]["harness"]
    names = {re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower() for req in extra}
    assert {_IMPORT_NAME.get(n, n) for n in names} == set(api.HARNESS_MODULES)


ARGVS = {
    "train": ["train", "--epochs", "1"],
    "sweep": ["sweep", "--optimizers", "adamw", "--lr", "0.001", "--out", "{out}"],
    "worker": ["worker", "--storage", "sqlite:///{out}/store.db", "--study", "x",
               "--out", "{out}"],
    "report": ["report", "--storage", "sqlite:///{out}/store.db", "--study", "x",
               "--out", "{out}"],
    "export": ["export", "--storage", "sqlite:///{out}/store.db", "--study", "x",
               "-o", "{out}/x.csv"],
    "reproduce": ["reproduce", "--preset", "quick", "--out", "{out}"],
}


def test_every_command_is_covered():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(ARGVS)


@pytest.mark.parametrize("missing", ["optuna", "mnist1d", "matplotlib"])
@pytest.mark.parametrize("command", sorted(ARGVS))
def test_without_the_harness_extra_one_line_exit_2(capsys, tmp_path, monkeypatch, command,
                                                   missing):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, missing, None)  # find_spec() now reports it absent
    out = tmp_path / "out"
    argv = [a.format(out=out) for a in ARGVS[command]]
    code = cli.main(argv)
    stdout, stderr = capsys.readouterr()
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("weightdecay: error: ")
    assert missing in lines[0] and "pip install 'weightdecay[harness]'" in lines[0]
    assert stdout == ""
    assert list(tmp_path.iterdir()) == []  # nothing written: no --out, no store, no cache


def test_reproduce_without_optuna_in_a_fresh_process(tmp_path):
    """The issue's case, as a user meets it: the console entry point, no traceback."""
    code = ("import sys; sys.modules['optuna'] = None\n"
            "from weightdecay.cli import main\n"
            f"sys.exit(main(['reproduce', '--preset', 'quick', '--out', {str(tmp_path / 'q')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "pip install 'weightdecay[harness]'" in proc.stderr
    assert not (tmp_path / "q").exists()


def test_core_import_needs_no_harness_module():
    """``import weightdecay`` and one AdamW step import none of the harness extra (beyond
    what torch itself imports when it finds it installed: tqdm)."""
    code = (
        "import sys, torch\n"
        "before = set(sys.modules)\n"
        "import weightdecay as wd\n"
        "p = torch.nn.Parameter(torch.ones(3)); p.grad = torch.ones(3)\n"
        "opt = wd.AdamW([p], lr=1e-3, weight_decay=0.1)\n"
        "wd.schedules.as_torch_scheduler(opt, wd.schedules.cosine_restarts(T_0=10, T_mult=2))\n"
        "opt.step()\n"
        "from weightdecay.api import HARNESS_MODULES\n"
        "print(sorted(m for m in HARNESS_MODULES if m in set(sys.modules) - before))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert proc.stdout.strip() == "[]"


def test_package_data_is_declared():
    """py.typed ships in the wheel (PEP 561); .ci/wheel_smoke.sh checks the built wheel."""
    assert (ROOT / "src" / "weightdecay" / "py.typed").is_file()
    data = _pyproject()["tool"]["setuptools"]["package-data"]
    assert "py.typed" in data["weightdecay"]


def test_version_is_written_once_and_is_the_installed_metadata():
    """``weightdecay --version`` and ``weightdecay.__version__`` say what the installed
    distribution's metadata says; pyproject.toml reads the version, it does not repeat it."""
    from importlib import metadata

    import weightdecay

    installed = metadata.version("weightdecay")
    assert weightdecay.__version__ == installed
    proc = subprocess.run([sys.executable, "-m", "weightdecay.cli", "--version"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"weightdecay {installed}"
    project = _pyproject()["project"]
    assert "version" not in project and project["dynamic"] == ["version"]
    attr = _pyproject()["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "weightdecay.__version__"
