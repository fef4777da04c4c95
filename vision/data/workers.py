"""Worker processes that die with their parent, and one-builder-at-a-time locks.

A ``data cache`` or ``synth`` killed with SIGKILL cannot stop its pool, so each worker
arranges its own death: on Linux the kernel signals it when the parent goes
(``prctl(PR_SET_PDEATHSIG)``); elsewhere a thread polls the parent id. A build also
holds an advisory lock (``flock``; the kernel releases it when the holder dies), so the
next build can tell temp files of a killed build, which it removes, from those of a
live one.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import ctypes.util
import fcntl
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ontology.errors import LesanetError

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """Pool initializer: end this process when ``parent_pid`` ends."""
    if sys.platform.startswith("linux") and _set_parent_death_signal():
        if os.getppid() != parent_pid:  # the parent died before the signal was armed
            os._exit(1)
        return
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="parent-watch").start()


def _set_parent_death_signal() -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int, interval: float = 0.5) -> None:
    while os.getppid() == parent_pid:
        time.sleep(interval)
    os._exit(1)


def process_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """A spawn-context pool whose workers die with this process."""
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    )


class BuildLocked(LesanetError, OSError):
    """Another live process is building into the same place."""


@contextmanager
def build_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if needed) while building."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BuildLocked(
                f"{what}: another process is building it now (lock {path}); wait for it to finish"
            ) from None
        yield
    finally:
        os.close(fd)  # closing releases the lock
