"""Atomic file writes: a reader never sees a half-written result file.

A write goes to a temporary file ``.NAME.XXXXXXXX.tmp`` next to its destination, which
is renamed over the destination once complete. A process killed mid-write leaves that
temporary file behind; :func:`remove_leftovers` removes it when the next run starts.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` on success.

    The temporary file lives in the same directory, so the final
    :func:`os.replace` is atomic on POSIX and Windows. On an exception the
    temporary file is removed and ``path`` is left as it was.

    :param path: the file to (re)write.
    :returns: a context manager yielding the temporary :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically.

    :param path: destination file.
    :param write: a function that writes the whole file to the path it is given.
    :returns: ``path`` as a :class:`~pathlib.Path`.
    """
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, flushed to the disk before the rename, so
    that ``path`` holds either its old or its new bytes even after a power cut.

    :returns: ``path`` as a :class:`~pathlib.Path`.
    :raises OSError: where the write fails (a full disk); ``path`` is left as it was.
    """

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    return write_atomic(path, write)


def leftovers(path: str | os.PathLike) -> list[Path]:
    """The temporary files that atomic writes to ``path`` left behind when their process
    was killed: files named ``.NAME.XXXXXXXX.tmp`` next to ``path`` and owned by this
    user (another user's files are never touched).

    :param path: the file whose interrupted writes to find.
    """
    path = Path(path)
    # tempfile.mkstemp names: prefix, 8 characters of [a-z0-9_], suffix
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")
    if not path.parent.is_dir():
        return []
    found = []
    for entry in sorted(path.parent.iterdir()):
        if not pattern.fullmatch(entry.name) or entry.is_symlink() or not entry.is_file():
            continue
        try:
            if hasattr(os, "getuid") and entry.stat().st_uid != os.getuid():
                continue
        except FileNotFoundError:  # gone meanwhile
            continue
        found.append(entry)
    return found


def remove_leftovers(path: str | os.PathLike) -> list[Path]:
    """Remove the :func:`leftovers` of interrupted writes to ``path``.

    Call it where no other process writes ``path`` (a run starting in its folder): the
    temporary file of a write in progress looks the same as a leftover.

    :param path: the file whose interrupted writes to clean up.
    :returns: the files removed.
    """
    removed = []
    for leftover in leftovers(path):
        try:
            leftover.unlink()
        except FileNotFoundError:  # gone meanwhile
            continue
        removed.append(leftover)
    return removed


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8).

    :returns: ``path`` as a :class:`~pathlib.Path`.
    """
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented, strict JSON to ``path`` atomically.

    NaN and infinite floats (a standard error of one point, a ``-inf`` estimate)
    become ``null``: strict JSON has no spelling for them.

    :returns: ``path`` as a :class:`~pathlib.Path`.
    """
    text = json.dumps(_finite_or_none(obj), indent=2, sort_keys=False, allow_nan=False)
    return write_text(path, text + "\n")


def _finite_or_none(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj
