"""Atomic writes leave no temporary file behind for good: a writer killed with SIGKILL mid-write leaves a
``.<name>.<host>-<pid>.*.tmp`` that the next write to the same destination removes (its pid is dead)."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from mentor3ad.io import files
from mentor3ad.io.files import STALE_TEMP_SECONDS, atomic_write_bytes, process_alive, remove_stale_temporaries


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the pid is free
    return child.pid


def _temps(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_temporary_names_carry_host_and_pid(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (seen.append(os.path.basename(src)), real_replace(src, dst)))
    atomic_write_bytes(tmp_path / "model.safetensors", b"data")
    assert len(seen) == 1 and seen[0].startswith(f".model.safetensors.{files._host()}-{os.getpid()}.")
    assert files.temp_owner(tmp_path / "model.safetensors", tmp_path / seen[0]) == (files._host(), os.getpid())


def test_process_alive():
    assert process_alive(os.getpid()) and not process_alive(_dead_pid()) and not process_alive(0)


def test_stale_temporaries_by_owner_and_age(tmp_path):
    target = tmp_path / "model.safetensors"
    host = files._host()
    dead = tmp_path / f".model.safetensors.{host}-{_dead_pid()}.abcd1234.tmp"
    live = tmp_path / f".model.safetensors.{host}-{os.getpid()}.efgh5678.tmp"
    other_host = tmp_path / f".model.safetensors.elsewhere-{_dead_pid()}.ijkl9012.tmp"  # pid of another machine
    old_style_fresh = tmp_path / ".model.safetensors.mnop3456.tmp"
    old_style_old = tmp_path / ".model.safetensors.qrst7890.tmp"
    live_but_old = tmp_path / f".model.safetensors.{host}-{os.getpid()}.uvwx1234.tmp"
    for path in (dead, live, other_host, old_style_fresh, old_style_old, live_but_old):
        path.write_bytes(b"partial")
    past = time.time() - STALE_TEMP_SECONDS - 5
    for path in (old_style_old, live_but_old):
        os.utime(path, (past, past))
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    # dead owner: removed at once; live owner / other host / no owner: only once older than STALE_TEMP_SECONDS
    assert _temps(tmp_path) == sorted(p.name for p in (live, other_host, old_style_fresh))
    assert remove_stale_temporaries(target, older_than_s=0.0) == 3 and _temps(tmp_path) == []


CHILD = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, sys.argv[2])
    from mentor3ad.io import files

    def slow_fsync(fd):  # the data is in the temporary file; the writer hangs before the rename
        print("writing", flush=True)
        time.sleep(120)

    os.fsync = slow_fsync
    files.atomic_write_bytes(sys.argv[1], os.urandom(8 * 2 ** 20))
""")


@pytest.mark.parametrize("reap", [True, False])
def test_sigkill_during_a_write_then_the_next_write_cleans_up(tmp_path, reap):
    target = tmp_path / "model.safetensors"
    atomic_write_bytes(target, b"old")
    src = os.path.join(os.path.dirname(files.__file__), "..", "..")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(target), os.path.abspath(src)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
        left = _temps(tmp_path)
        assert len(left) == 1 and f"-{child.pid}." in left[0]
        assert (tmp_path / left[0]).stat().st_size == 8 * 2 ** 20
        os.kill(child.pid, signal.SIGKILL)
        if reap:
            child.wait()
        else:  # killed but not yet reaped (a zombie): its pid still exists, the writer is gone all the same
            deadline = time.time() + 10
            while process_alive(child.pid) and time.time() < deadline:
                time.sleep(0.02)
        assert target.read_bytes() == b"old" and _temps(tmp_path) == left  # the kill left it behind
        atomic_write_bytes(target, b"new")
        assert target.read_bytes() == b"new"
        assert _temps(tmp_path) == []
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
