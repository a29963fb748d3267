"""The documentation site (mkdocs.yml, docs/): API coverage, navigation, generated parts.

- Every public name in ``weightdecay.__all__`` has an entry (``::: path``) in docs/api/ that
  resolves to that very object, and a docstring (its update rule or contract); every name of
  ``weightdecay.schedules.__all__`` is listed on the schedules API page.
- Every page is in the navigation.
- The scripts the build runs (``<!-- gen:run ... -->``) pass their own checks.
- The build hook: one convention row per ``DECAY_CONVENTIONS`` name, an unknown name fails,
  and the results include becomes a note while docs/results/quick.md does not exist.

``make docs`` itself (``mkdocs build --strict``) runs in .ci/run.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import weightdecay as wd
from _optional import need as _need

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
need = functools.partial(_need, install="pip install -r requirements-docs.txt -c requirements.txt")

_ENTRY = re.compile(r"^::: ([\w.]+)\s*$", re.M)


def resolve(path: str):
    """The object a ``::: dotted.path`` entry documents (module, or attribute of one)."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)


def api_entries() -> dict[str, object]:
    entries = {}
    for page in sorted((DOCS / "api").glob("*.md")):
        for path in _ENTRY.findall(page.read_text()):
            entries[path] = resolve(path)
    return entries


def test_every_public_name_has_an_api_entry():
    entries = api_entries()
    documented = list(entries.values())
    missing = [name for name in wd.__all__
               if not any(obj is getattr(wd, name) for obj in documented)]
    assert not missing, f"no API entry in docs/api/ for weightdecay.{missing}"


def test_every_api_entry_states_its_contract():
    for path, obj in api_entries().items():
        if isinstance(obj, tuple):  # DECAY_CONVENTIONS: the generated table follows it
            continue
        doc = inspect.getdoc(obj) or ""
        assert len(doc) > 40, f"{path} has no docstring to render"


def test_schedules_page_lists_every_schedule_name():
    text = (DOCS / "api" / "schedules.md").read_text()
    listed = set(re.findall(r"^\s+- (\w+)$", text, re.M))
    assert set(wd.schedules.__all__) <= listed, set(wd.schedules.__all__) - listed


def _nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [p for item in node for p in _nav_pages(item)]
    if isinstance(node, dict):
        return [p for value in node.values() for p in _nav_pages(value)]
    return []


def test_every_page_is_in_the_navigation():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = set(_nav_pages(config["nav"]))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")
             if "_hooks" not in p.parts and p.parent.name != "results"}
    assert pages == nav


def test_pages_reference_existing_examples():
    for page in DOCS.rglob("*.md"):
        for ref in re.findall(r'(?:gen:run |--8<-- ")(examples/[\w./]+)', page.read_text()):
            assert (ROOT / ref).is_file(), f"{page.name}: {ref}"


@pytest.mark.parametrize("script", ["convert_lambda.py", "flat_mode.py"])
def test_scripts_run_by_the_build_pass(script):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def _hook():
    need("mkdocs")
    spec = importlib.util.spec_from_file_location("docs_hook", DOCS / "_hooks" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hook_convention_table_follows_the_library(monkeypatch):
    hook = _hook()
    table = hook.conventions_table()
    for name in wd.DECAY_CONVENTIONS:
        assert f'`"{name}"`' in table
    rows = [line for line in table.splitlines() if line.startswith("| `\"")]
    assert len(rows) == len(wd.DECAY_CONVENTIONS)
    assert "default λ (`weight_decay=`) of every optimizer here is 0" in table
    monkeypatch.setattr(wd, "DECAY_CONVENTIONS", (*wd.DECAY_CONVENTIONS, "mystery"))
    from mkdocs.exceptions import PluginError

    with pytest.raises(PluginError, match="mystery"):
        hook.conventions_table()


def test_hook_results_include(monkeypatch, tmp_path):
    hook = _hook()
    page = 'text\n--8<-- "docs/results/quick.md"\nmore'
    monkeypatch.setattr(hook, "ROOT", tmp_path)
    assert "Not generated yet" in hook.on_page_markdown(page, None, None, None)
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "quick.md").write_text("| claim |\n")
    assert hook.on_page_markdown(page, None, None, None) == page  # left to snippets


def test_hook_draws_every_schedule_plot_referenced():
    hook = _hook()
    plots, T = hook._schedules()
    referenced = set(re.findall(r"\(schedules/(\w+)\.png\)", (DOCS / "schedules.md").read_text()))
    assert referenced == set(plots)
    png = hook.plot_png(*plots["cosine_restarts"], T)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_install_page_quotes_the_cli_message(capsys, monkeypatch, tmp_path):
    from weightdecay import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "optuna", None)
    assert cli.main(["reproduce", "--preset", "quick", "--out", "q"]) == 2
    message = capsys.readouterr().err.strip()
    assert message in (DOCS / "index.md").read_text()


def test_initial_lr_pitfalls_as_the_integrations_page_says():
    """docs/integrations.md#pitfalls: what a stale or foreign initial_lr does to eta_t."""
    import torch

    def eta(opt):
        group = opt.param_groups[0]
        return group["lr"] / group["initial_lr"]

    p = torch.nn.Parameter(torch.ones(2))
    opt = wd.AdamW([p], lr=1e-3, weight_decay=0.1)
    assert opt.param_groups[0]["initial_lr"] == 1e-3  # recorded at construction
    opt.param_groups[0]["lr"] = 2e-3  # changed afterwards: eta_t = lr_new / lr_old
    assert eta(opt) == pytest.approx(2.0)
    torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    assert opt.param_groups[0]["initial_lr"] == 1e-3  # a later scheduler keeps it (setdefault)

    opt = wd.AdamW([p], lr=1e-3, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=100)
    etas = []
    for _ in range(99):
        etas.append(eta(opt))
        p.grad = torch.zeros(2)
        opt.step()
        sched.step()
    assert max(etas) == pytest.approx(25.0)  # div_factor: the decay is scaled with it
    assert "OneCycleLR" in (DOCS / "integrations.md").read_text()
