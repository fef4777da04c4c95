"""The query worker: a process that holds the store and runs one user query at a time.

Started by :mod:`kg.pool` as ``python -m kg.worker STORE --parent PID [--read-write]``.
Oxigraph cannot be interrupted inside a query and its recursive parser can overflow
the stack, so user SPARQL runs here, where the parent can kill it (time, memory, a
client that left) and survive its crash. Messages are length-prefixed frames on
stdin/stdout: a JSON request in; a JSON header and a body frame out.

Request: ``{"op": "query", "text": str, "graphs": [IRI] | null, "format": "json" | "csv",
"max_rows": int, "max_bytes": int}`` or ``{"op": "update", "text": str}``.
Header: ``{"ok": true, "content_type": str}`` or ``{"ok": false, "status": int, "message": str}``.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import threading
import time
from typing import Any, BinaryIO

_HEADER = struct.Struct(">I")
MAX_FRAME = 1 << 31  # a frame length beyond this is a broken stream, not a message


def write_frame(stream: BinaryIO, payload: bytes) -> None:
    stream.write(_HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def read_frame(stream: BinaryIO) -> bytes | None:
    """The next frame, or None at end of stream."""
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(head)
    payload = stream.read(size)
    return payload if len(payload) == size else None


def _die_with_parent(parent: int) -> None:
    """Exit when the parent is gone (kill -9 included): the query engine releases the
    GIL, so this thread runs even during a long query."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def execute(store: Any, request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """Run one request on a :class:`kg.store.LesionStore`; never raises."""
    # local: the worker imports the store (pyoxigraph) only once it runs
    from kg.store import ResultTooLarge

    try:
        if request.get("op") == "update":
            store.update(request["text"])
            return {"ok": True, "status": 204, "content_type": "text/plain"}, b""
        result = store.query_limited(
            request["text"], request.get("graphs"), int(request["max_rows"]), int(request["max_bytes"])
        )
        if result.ntriples is not None:
            body, content_type = result.ntriples.encode("utf-8"), "application/n-triples"
        elif request.get("format") == "csv":
            body, content_type = result.to_csv().encode("utf-8"), "text/csv; charset=utf-8"
        else:
            body, content_type = result.to_json().encode("utf-8"), "application/sparql-results+json"
        if len(body) > int(request["max_bytes"]):
            raise ResultTooLarge(
                f"the result is {len(body):,} bytes, over the limit of {int(request['max_bytes']):,} (--max-bytes); "
                "add LIMIT or select fewer variables"
            )
        return {"ok": True, "content_type": content_type}, body
    except ResultTooLarge as exc:
        return {"ok": False, "status": 422, "message": str(exc)}, b""
    except (SyntaxError, ValueError) as exc:
        return {"ok": False, "status": 400, "message": _first_line(exc)}, b""
    except OSError as exc:
        return {"ok": False, "status": 500, "message": f"the store failed: {_first_line(exc)}"}, b""
    except Exception as exc:  # noqa: BLE001 - the worker answers every request
        return {"ok": False, "status": 500, "message": f"{type(exc).__name__}: {_first_line(exc)}"}, b""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kg.worker")
    parser.add_argument("store")
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--read-write", action="store_true")
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    channel_in, channel_out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the frames
    try:
        # local and inside the try: an import failure is reported to the parent as one line
        from kg.store import LesionStore

        store = LesionStore(args.store, read_only=not args.read_write)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        write_frame(channel_out, json.dumps({"ready": False, "message": _first_line(exc)}).encode("utf-8"))
        return 1
    write_frame(channel_out, json.dumps({"ready": True}).encode("utf-8"))
    while True:
        frame = read_frame(channel_in)
        if frame is None:
            return 0
        try:
            request = json.loads(frame)
            header, body = execute(store, request)
        except (ValueError, KeyError, TypeError) as exc:
            header, body = {"ok": False, "status": 400, "message": f"bad worker request: {_first_line(exc)}"}, b""
        write_frame(channel_out, json.dumps(header).encode("utf-8"))
        write_frame(channel_out, body)


if __name__ == "__main__":
    raise SystemExit(main())
