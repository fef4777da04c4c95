"""Worker processes that run user SPARQL under :class:`kg.guard.QueryLimits`.

A :class:`Worker` is one ``python -m kg.worker`` process with the store open. The
parent waits for its answer while watching the clock, the worker's resident memory and
(for the endpoint) whether the client is still there; past a limit, or when the client
leaves, the worker is killed with SIGKILL and a fresh one started. A worker that dies
(Oxigraph segfaults on some inputs) becomes a :class:`QueryFailed` naming the signal.
:class:`WorkerPool` bounds how many queries run at once. POSIX only (``select`` on pipes).
"""

from __future__ import annotations

import collections
import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kg.errors import KgError
from kg.guard import QueryLimits, check_sparql
from kg.results import QueryResult, parse_results
from kg.worker import MAX_FRAME
from ontology.errors import LesanetError

_POLL_S = 0.05
_START_TIMEOUT_S = 120.0
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_PROJECT_ROOT = str(Path(__file__).resolve().parents[1])


class QueryFailed(LesanetError, ValueError):
    """A query that did not give a result; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.status = status


class ClientGone(Exception):
    """The client closed its connection; its query was cancelled."""


def _rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None  # not Linux, or the process is gone


def _signal_name(returncode: int | None) -> str:
    if returncode is None or returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"signal {-returncode} {signal.Signals(-returncode).name}"
    except ValueError:
        return f"signal {-returncode}"


class Worker:
    """One worker process; :meth:`ask` sends a request and waits for the answer."""

    def __init__(
        self,
        store: str | Path,
        read_write: bool = False,
        log: Callable[[str], None] | None = None,
        respawn: bool = True,
    ) -> None:
        self.store = str(store)
        self.read_write = read_write
        self.respawn = respawn  # start a fresh worker after a kill (a server's); a one-off query's is not
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None
        self._ready = False
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=5)
        self.restarts = 0
        self._spawn()

    # -- life cycle

    def _spawn(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PROJECT_ROOT, env.get("PYTHONPATH")) if p)
        command = [sys.executable, "-m", "kg.worker", self.store, "--parent", str(os.getpid())]
        if self.read_write:
            command.append("--read-write")
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, close_fds=True
        )
        self._ready = False
        self._stderr_tail.clear()
        threading.Thread(target=self._drain_stderr, args=(self._process,), daemon=True).start()

    def _drain_stderr(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self._stderr_tail.append(line)
            if self._log is not None:
                self._log(f"worker {process.pid}: {line}")

    def wait_ready(self, timeout: float = _START_TIMEOUT_S) -> None:
        """Block until the worker has opened the store (raise :class:`QueryFailed` if it cannot)."""
        if self._ready:
            return
        frame = self._read_frame(time.monotonic() + timeout, None, None)
        message = json.loads(frame)
        if not message.get("ready"):
            self._reap()
            raise QueryFailed(f"the query worker could not open the store: {message.get('message')}", status=500)
        self._ready = True

    def kill(self) -> None:
        """SIGKILL the worker (it may be stuck in the engine) and, if it respawns, start a fresh one."""
        self._reap()
        self.restarts += 1
        if self.respawn:
            self._spawn()
        else:
            self._process = None

    def _reap(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass

    def close(self) -> None:
        process = self._process
        if process is not None and process.poll() is None and process.stdin is not None:
            try:
                process.stdin.close()  # end of requests: the worker exits by itself
                process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._reap()
        self._process = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    # -- requests

    def ask(
        self, request: dict[str, Any], limits: QueryLimits, client_gone: Callable[[], bool] | None = None
    ) -> tuple[dict[str, Any], bytes]:
        """Send ``request``; the worker's (header, body). Raises :class:`QueryFailed`
        (time, memory, crash) or :class:`ClientGone`; the worker is replaced after either."""
        if self._process is None or self._process.poll() is not None:
            self._reap()
            self._spawn()
        self.wait_ready()
        payload = json.dumps(request).encode("utf-8")
        assert self._process is not None and self._process.stdin is not None
        try:
            self._process.stdin.write(len(payload).to_bytes(4, "big") + payload)
            self._process.stdin.flush()
        except OSError:
            self._crashed()
        deadline = time.monotonic() + limits.timeout_s
        memory = limits.max_memory_mib << 20
        header = json.loads(self._read_frame(deadline, memory, client_gone, limits))
        body = self._read_frame(deadline, memory, client_gone, limits)
        return header, body

    def _read_frame(
        self,
        deadline: float,
        memory: int | None,
        client_gone: Callable[[], bool] | None,
        limits: QueryLimits | None = None,
    ) -> bytes:
        head = self._read_exact(4, deadline, memory, client_gone, limits)
        size = int.from_bytes(head, "big")
        if size > MAX_FRAME:
            self.kill()
            raise QueryFailed("the query worker sent a broken answer; it was restarted")
        return self._read_exact(size, deadline, memory, client_gone, limits)

    def _read_exact(
        self,
        size: int,
        deadline: float,
        memory: int | None,
        client_gone: Callable[[], bool] | None,
        limits: QueryLimits | None,
    ) -> bytes:
        assert self._process is not None and self._process.stdout is not None
        fd = self._process.stdout.fileno()
        chunks: list[bytes] = []
        got = 0
        while got < size:
            readable, _, _ = select.select([fd], [], [], _POLL_S)
            if readable:
                chunk = os.read(fd, min(size - got, 1 << 20))
                if not chunk:
                    self._crashed()
                chunks.append(chunk)
                got += len(chunk)
                continue
            if time.monotonic() > deadline:
                self.kill()
                seconds = limits.timeout_s if limits else _START_TIMEOUT_S
                raise QueryFailed(
                    f"the query ran past the time limit of {seconds:g} s (--timeout) and was stopped", status=503
                )
            if memory is not None and self.pid is not None:
                rss = _rss_bytes(self.pid)
                if rss is not None and rss > memory:
                    self.kill()
                    raise QueryFailed(
                        f"the query used over {memory >> 20} MiB of memory (--max-memory) and was stopped", status=503
                    )
            if client_gone is not None and client_gone():
                self.kill()
                raise ClientGone()
        return b"".join(chunks)

    def _crashed(self) -> None:
        process = self._process
        assert process is not None
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        how = _signal_name(process.poll())
        tail = next((line for line in reversed(self._stderr_tail) if line.strip()), "")
        self.kill()
        detail = f": {tail[:300]}" if tail else ""
        restarted = "; the query worker was restarted" if self.respawn else ""
        raise QueryFailed(f"the SPARQL engine crashed on this query ({how}){detail}{restarted}")


class WorkerPool:
    """``size`` workers over one store; :meth:`run` borrows one for a request."""

    def __init__(
        self, store: str | Path, size: int, read_write: bool = False, log: Callable[[str], None] | None = None
    ) -> None:
        if size < 1:
            raise KgError(f"the worker pool needs at least 1 worker, got {size}")
        self.size = size
        self._workers = [Worker(store, read_write, log) for _ in range(size)]
        self._idle: queue.Queue[Worker] = queue.Queue()
        for worker in self._workers:
            self._idle.put(worker)

    def wait_ready(self) -> None:
        for worker in self._workers:
            worker.wait_ready()

    @property
    def restarts(self) -> int:
        return sum(w.restarts for w in self._workers)

    def run(
        self,
        request: dict[str, Any],
        limits: QueryLimits,
        client_gone: Callable[[], bool] | None = None,
        wait_s: float | None = None,
    ) -> tuple[dict[str, Any], bytes]:
        """Run ``request`` on the next free worker, waiting up to ``wait_s`` (default:
        the query time limit) for one; :class:`QueryFailed` with 503 when all stay busy."""
        deadline = time.monotonic() + (limits.timeout_s if wait_s is None else wait_s)
        while True:
            try:
                worker = self._idle.get(timeout=0.2)
                break
            except queue.Empty:
                if client_gone is not None and client_gone():
                    raise ClientGone() from None
                if time.monotonic() > deadline:
                    raise QueryFailed(
                        f"all {self.size} query workers are busy (--workers); retry later", status=503
                    ) from None
        try:
            return worker.ask(request, limits, client_gone)
        finally:
            self._idle.put(worker)

    def close(self) -> None:
        for worker in self._workers:
            worker.close()


def query_request(text: str, limits: QueryLimits, fmt: str = "json", graphs: list[str] | None = None) -> dict[str, Any]:
    """The worker's request for one query (format in kg/worker.py), with the result limits."""
    return {
        "op": "query",
        "text": text,
        "graphs": graphs,
        "format": fmt,
        "max_rows": limits.max_rows,
        "max_bytes": limits.max_bytes,
    }


def query_store(store: str | Path, text: str, limits: QueryLimits) -> QueryResult:
    """A user query on an on-disk store in a one-off worker, as a :class:`QueryResult`
    (``lesanet kg query``: checked first, like the endpoint's)."""
    check_sparql(text, limits)
    content_type, body = run_query(store, text, limits, "json")
    return parse_results(content_type, body)


def run_query(
    store: str | Path, text: str, limits: QueryLimits, fmt: str = "json", graphs: list[str] | None = None
) -> tuple[str, bytes]:
    """One query in a one-off worker (``lesanet kg query``): (content type, body).
    Raises :class:`QueryFailed` for limits, crashes and errors the engine reports."""
    worker = Worker(store, respawn=False)
    try:
        header, body = worker.ask(query_request(text, limits, fmt, graphs), limits)
    finally:
        worker.close()
    if not header.get("ok"):
        raise QueryFailed(str(header.get("message")), int(header.get("status", 500)))
    return str(header["content_type"]), body
