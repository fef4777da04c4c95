"""Writing and reading files the one way every room does.

Writes are atomic, with ordinary modes; JSON files are read with one error rule (the file
and line named, in the room's own error class) and versioned ones checked for their
``format`` / ``version`` the same way.

A reader (another process, a later run, a killed one resumed) never sees half a file: the
content goes to a temp file in the target's folder, which is then renamed over the target
(a rename within one folder is atomic). The temp file is removed when writing fails. New
files get the mode an ordinary new file gets under the umask (``mkstemp`` would leave 0600).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def default_file_mode() -> int:
    """The mode an ordinary new file gets under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """A temp path beside ``path`` to write to; renamed over ``path`` when the block ends well.

    For writers that take a file name (safetensors, torch.save, matplotlib, pydicom);
    ``suffix`` for those that read the format from it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_lines_atomic(path: str | os.PathLike[str], lines: Iterable[str]) -> None:
    """Write ``lines`` (each with its own newline) as they come: memory holds one line."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line)


def write_json_atomic(path: str | os.PathLike[str], obj: object, indent: int | None = 2) -> None:
    """``obj`` as UTF-8 JSON (non-ASCII kept as is) and a final newline."""
    write_text_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike[str], error: type[Exception], what: str = "JSON") -> Any:
    """The JSON value of ``path``; an unreadable file or bad JSON raises ``error`` naming the file (and line)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read {what} ({exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None


def read_versioned_json(
    path: str | os.PathLike[str], fmt: str, version: int, error: type[Exception], hint: str = ""
) -> dict[str, Any]:
    """A JSON object whose ``format`` is ``fmt`` and ``version`` is ``version``; otherwise ``error``
    naming the file, what it holds and ``hint`` (what to do)."""
    doc = read_json(path, error, f"a {fmt} file")
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise error(f"{path}: not a {fmt} file (format {found!r}){hint}")
    if doc.get("version") != version:
        raise error(f"{path}: {fmt} version {doc.get('version')!r}, this toolkit reads version {version}{hint}")
    return doc
