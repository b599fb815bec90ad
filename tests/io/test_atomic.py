"""Atomic writes: complete files or nothing, old content kept on failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from babelrs_core.io.atomic import atomic_dir, atomic_path, write_json, write_text


def test_write_text_creates_parents_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.txt"
    write_text(target, "hello")
    assert target.read_text() == "hello"
    assert [p.name for p in target.parent.iterdir()] == ["b.txt"]


def test_failure_keeps_old_file_and_removes_temp(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"v": 2, "half')
        raise RuntimeError("disk full")
    assert target.read_text() == '{\n  "v": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_atomic_dir_swaps_only_when_complete(tmp_path: Path) -> None:
    target = tmp_path / "raw"
    with atomic_dir(target) as tmp:
        (tmp / "x.txt").write_text("1")
    assert (target / "x.txt").read_text() == "1"
    with pytest.raises(ValueError), atomic_dir(target) as tmp:
        (tmp / "y.txt").write_text("2")
        raise ValueError("bad input")
    assert sorted(p.name for p in target.iterdir()) == ["x.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
    with atomic_dir(target) as tmp:
        (tmp / "z.txt").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["z.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
