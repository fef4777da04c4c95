"""Writing files the one way every room does: atomically, with ordinary modes.

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
