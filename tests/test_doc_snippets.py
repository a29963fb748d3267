"""Every ```python block of README.md and docs/**/*.md runs, as a reader would run it.

The blocks of one page run in order, in one namespace, in a temporary working directory, like
the cells of a notebook. A block that must not run (a GPU, minutes of training, a cluster,
packages outside the test environment) is marked by an HTML comment on the line directly
before its fence, ``<!-- not-run: <reason> -->``: it is skipped, and listed with its reason in
the skips of this file. Pages are found by globbing, so a new page is covered as it is added.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
_FENCE = re.compile(r"^\s*(?P<ticks>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
_MARKER = re.compile(r"^\s*<!--\s*not-run:(?P<reason>.*?)-->\s*$")
_ANY_MARKER = re.compile(r"<!--\s*not-run\b")


@dataclass(frozen=True)
class Block:
    page: str  # path relative to the repository root
    line: int  # 1-based line of the opening fence
    code: str
    not_run: str | None  # the reason, where the block is marked


def pages() -> list[Path]:
    found = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [p for p in found if p.is_file()]


def blocks(path: Path, root: Path = ROOT) -> list[Block]:
    """The fenced blocks of a page whose language is ``python``, dedented (fences inside
    admonitions are indented), each with the reason of its not-run marker, if any."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        ticks, lang = m["ticks"], m["lang"]
        end = i + 1
        while end < len(lines) and not re.match(rf"^\s*{re.escape(ticks)}\s*$", lines[end]):
            end += 1
        if lang == "python":
            marker = _MARKER.match(lines[i - 1]) if i > 0 else None
            code = textwrap.dedent("\n".join(lines[i + 1:end]))
            out.append(Block(str(path.relative_to(root)), i + 1, code,
                             marker["reason"].strip() if marker else None))
        i = end + 1
    return out


ALL = {str(p.relative_to(ROOT)): blocks(p) for p in pages()}
# pages whose blocks need a folder prepared first: they run, in order, in the test named here
RUN_ELSEWHERE = {
    "docs/own-model.md": ("tests/test_own_model.py", "test_the_worked_example_end_to_end"),
}
RUN = [page for page, bs in ALL.items()
       if page not in RUN_ELSEWHERE and any(b.not_run is None for b in bs)]
NOT_RUN = [b for bs in ALL.values() for b in bs if b.not_run is not None]


@pytest.mark.parametrize("page", RUN)
def test_python_blocks_of_the_page_run_in_order(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    try:
        for block in ALL[page]:
            if block.not_run is not None:
                continue
            code = compile(block.code, f"{block.page}:{block.line}", "exec")
            try:
                exec(code, namespace)  # noqa: S102 - the project's own documentation
            except Exception as exc:
                raise AssertionError(f"{block.page}, the block at line {block.line}: "
                                     f"{type(exc).__name__}: {exc}") from exc
    finally:
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)


@pytest.mark.parametrize("page", sorted(RUN_ELSEWHERE))
def test_pages_run_elsewhere_are_run_by_the_test_named(page):
    test_file, test_name = RUN_ELSEWHERE[page]
    source = (ROOT / test_file).read_text(encoding="utf-8")
    assert page in ALL, f"{page} is no longer a page of the docs"
    assert re.search(rf"^def {test_name}\(", source, re.M), f"{test_file} has no {test_name}"
    assert Path(page).name in source, f"{test_file} does not read {page}"


@pytest.mark.parametrize("block", NOT_RUN, ids=[f"{b.page}:{b.line}" for b in NOT_RUN])
def test_blocks_marked_not_run_are_listed_with_their_reason(block):
    assert block.not_run, f"{block.page}:{block.line}: a not-run marker needs a reason"
    pytest.skip(f"{block.page}:{block.line} is not run: {block.not_run}")


@pytest.mark.parametrize("page", list(ALL))
def test_every_marker_has_a_reason_and_stands_before_a_python_fence(page):
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not _ANY_MARKER.search(line):
            continue
        marker = _MARKER.match(line)
        assert marker and marker["reason"].strip(), \
            f"{page}:{i + 1}: write the marker as <!-- not-run: <reason> -->"
        fence = _FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
        assert fence and fence["lang"] == "python", \
            f"{page}:{i + 1}: a not-run marker goes on the line directly before a ```python fence"


def test_the_runner_finds_blocks_markers_and_indented_fences(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n```python\nx = 1\n```\n<!-- not-run: needs a GPU -->\n```python\n"
                    "x = 2\n```\n??? example\n    ```python\n    y = x + 1\n    ```\n"
                    "```bash\nls\n```\n")
    found = blocks(page, root=tmp_path)
    assert [(b.line, b.code, b.not_run) for b in found] == [
        (2, "x = 1", None), (6, "x = 2", "needs a GPU"), (10, "y = x + 1", None)]

