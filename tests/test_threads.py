"""Fair thread shares between talk3d processes (talk3d.threads)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from talk3d import threads

PEER = "import sys; from talk3d import threads; assert threads._register(); print('ready', flush=True); sys.stdin.read()"


def _peer(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", PEER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(folder)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.skipif(not hasattr(os, "fork"), reason="flock registry is POSIX only")
def test_share_follows_the_running_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(threads, "cores", lambda: 4)
    registry = threads.registry()
    registry.mkdir(mode=0o700, exist_ok=True)
    (registry / "999999999.lock").write_text("")  # left by a process that ended: nobody holds its lock
    assert threads.running_processes() == 1
    assert not (registry / "999999999.lock").exists()
    peers = [_peer(tmp_path), _peer(tmp_path)]
    try:
        assert threads.running_processes() == 3
        assert threads.fair_share() == 1  # 4 cores // 3 processes
        assert threads.fair_share(floor=4) == 1
        peers[0].communicate("")
        assert threads.running_processes() == 2 and threads.fair_share() == 2
    finally:
        for p in peers:
            if p.poll() is None:
                p.communicate("")
    assert threads.running_processes() == 1 and threads.fair_share() == 4
    assert threads.fair_share(floor=2) == 2  # the local ranks of a fit count before they register


def test_explicit_count_is_kept_and_rebalance_is_rate_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    before, saved = torch.get_num_threads(), dict(threads._state)
    try:
        assert threads.start(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr(threads, "fair_share", lambda floor=1: 2)
        assert threads.rebalance() == 1  # an explicit count is never changed
        assert threads.start(0) == 2 and torch.get_num_threads() == 2
        monkeypatch.setattr(threads, "fair_share", lambda floor=1: 1)
        assert threads.rebalance() == 2  # re-counted only every RECHECK_SECONDS
        monkeypatch.setattr(threads, "RECHECK_SECONDS", 0.0)
        assert threads.rebalance() == 1
    finally:
        torch.set_num_threads(before)
        threads._state.update({k: v for k, v in saved.items() if k != "handle"})


@pytest.mark.skipif(not hasattr(os, "fork"), reason="flock registry is POSIX only")
def test_a_folder_others_can_write_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setitem(threads._state, "handle", None)
    threads.registry().mkdir(mode=0o777)
    os.chmod(threads.registry(), 0o777)
    assert not threads._register()
    assert threads.running_processes() == 1  # counts itself only, registers nothing
    assert list(threads.registry().iterdir()) == []


def test_allocator_settings_apply_once_and_report_glibc() -> None:
    import platform

    from talk3d import memory

    first = memory.keep_freed_memory()
    assert memory.keep_freed_memory() is first  # applied once per process
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert first is True
