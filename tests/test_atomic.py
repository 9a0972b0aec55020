"""The one safe-write helper (explorer.atomic): an exclusive temporary file with an unpredictable
name in the target's folder, fsync of the file and the folder, a rename; stale temporary files of
killed writes removed; a symlink planted where a temporary file would go never redirects a write."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from explorer import atomic
from explorer.atomic import atomic_open, atomic_path, remove_stale_temps, temp_pattern

ROOT = Path(__file__).resolve().parents[1]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_write_replaces_the_target_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    with atomic_open(target) as fh:
        fh.write("new")
        assert target.read_text() == "old"  # nothing visible until the rename
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["r.json"]
    mask = os.umask(0o022)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # what open() would give, not mkstemp's 0600


def test_an_error_while_writing_leaves_no_file(tmp_path):
    for helper in (atomic_open, atomic_path):
        with pytest.raises(RuntimeError):
            with helper(tmp_path / "r.json"):
                raise RuntimeError("writer failed")
    assert os.listdir(tmp_path) == []


def test_temporary_names_are_unpredictable(tmp_path):
    names = set()
    for _ in range(3):
        with atomic_path(tmp_path / "x.bin") as tmp:
            names.add(tmp.name)
            assert temp_pattern("x.bin").match(tmp.name) and tmp.exists()
    assert len(names) == 3  # a random part, not just the PID


def test_a_symlink_planted_at_a_guessable_name_does_not_redirect_the_write(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "r.json"
    # the name earlier versions used (.NAME.tmpPID), and the name the next draw would give
    (tmp_path / f".r.json.tmp{os.getpid()}").symlink_to(victim)
    (tmp_path / f".r.json{atomic.TMP_MARK}{os.getpid()}-0123456789abcdef").symlink_to(victim)
    draws = None
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda n: next(draws))
    for helper in ("open", "path"):
        draws = iter(["0123456789abcdef", "fedcba9876543210"])  # the planted name first
        if helper == "open":
            with atomic_open(target) as fh:
                fh.write("report")
        else:
            with atomic_path(target) as tmp:
                tmp.write_text("report")
        assert victim.read_text() == "precious" and target.read_text() == "report" and not target.is_symlink()


def test_stale_temporary_files_of_killed_writes_are_removed_live_ones_kept(tmp_path):
    dead = _dead_pid()
    stale = [tmp_path / f".r.json{atomic.TMP_MARK}{dead}-00ff00ff00ff00ff", tmp_path / f".r.json.tmp{dead}"]
    live = tmp_path / f".r.json{atomic.TMP_MARK}{os.getppid()}-00ff00ff00ff00ff"  # a write under way elsewhere
    other = tmp_path / f".other.json{atomic.TMP_MARK}{dead}-00ff00ff00ff00ff"     # another target's: not ours to judge
    for p in (*stale, live, other):
        p.write_text("partial")
    with atomic_open(tmp_path / "r.json") as fh:
        fh.write("{}")
    assert not any(p.exists() for p in stale)
    assert live.exists() and other.exists()
    assert remove_stale_temps(tmp_path / "other.json") == [other]


def test_a_write_killed_midway_leaves_a_temp_that_the_next_write_cleans(tmp_path):
    target = tmp_path / "r.json"
    code = ("import os, signal; from explorer.atomic import atomic_open\n"
            f"with atomic_open({str(target)!r}) as fh:\n"
            "    fh.write('half'); fh.flush(); os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -signal.SIGKILL
    left = os.listdir(tmp_path)
    assert len(left) == 1 and temp_pattern("r.json").match(left[0]) and not target.exists()
    with atomic_open(target) as fh:
        fh.write("whole")
    assert os.listdir(tmp_path) == ["r.json"] and target.read_text() == "whole"


def test_file_and_folder_are_fsynced_around_the_rename(tmp_path, monkeypatch):
    calls = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (calls.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}"))),
                                                        fsync(fd)))
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (calls.append(("replace", None)), replace(a, b)))
    for helper in (atomic_open, atomic_path):
        calls.clear()
        with helper(tmp_path / "r.bin") as h:
            (h.write("x") if helper is atomic_open else h.write_text("x"))
        # the file's data first (fd of a file), then the rename, then the folder (fd of a directory)
        assert calls == [("fsync", False), ("replace", None), ("fsync", True)], calls
