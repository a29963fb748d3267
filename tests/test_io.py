"""weightdecay._io: atomic writes that never leave the folder the user named."""

from __future__ import annotations

import os

import pytest

from weightdecay._io import UnsafePathError, atomic_open, check_inside, write_atomic


def test_write_atomic_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out" / "a.txt"
    write_atomic(path, "one", root=tmp_path)
    write_atomic(path, b"two", root=tmp_path)
    assert path.read_text() == "two"
    assert sorted(os.listdir(path.parent)) == ["a.txt"]
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("good")
    with pytest.raises(RuntimeError), atomic_open(path, root=tmp_path) as fh:
        fh.write("half")
        raise RuntimeError("disk full")
    assert path.read_text() == "good"
    assert os.listdir(tmp_path) == ["a.txt"]


@pytest.mark.parametrize("where", ["file", "folder"])
def test_a_link_out_of_the_root_is_refused(tmp_path, where):
    root, outside = tmp_path / "out", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text("keep")
    if where == "file":
        (root / "report.html").symlink_to(victim)
        dest = root / "report.html"
    else:
        (root / "sub").symlink_to(outside)
        dest = root / "sub" / "victim.txt"
    with pytest.raises(UnsafePathError, match="outside"):
        write_atomic(dest, "evil", root=root)
    assert victim.read_text() == "keep"


def test_a_link_inside_the_root_is_replaced_not_written_through(tmp_path):
    (tmp_path / "target.txt").write_text("keep")
    (tmp_path / "link.txt").symlink_to(tmp_path / "target.txt")
    write_atomic(tmp_path / "link.txt", "new", root=tmp_path)
    assert (tmp_path / "target.txt").read_text() == "keep"
    assert not (tmp_path / "link.txt").is_symlink()
    assert (tmp_path / "link.txt").read_text() == "new"


def test_a_root_reached_through_a_link_is_fine(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    check_inside(tmp_path / "alias" / "x.txt", tmp_path / "alias")
    with pytest.raises(UnsafePathError):
        check_inside(tmp_path / "x.txt", tmp_path / "alias")


def test_mode_must_write_new_files(tmp_path):
    with pytest.raises(ValueError, match="mode"), atomic_open(tmp_path / "a", "a"):
        pass
