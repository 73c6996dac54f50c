"""One writer per run folder: an exclusive lock that names its holder.

:func:`hold` takes the lock of a folder for a block: the file ``.lock`` in the folder,
locked by the operating system (``flock`` on POSIX, ``msvcrt.locking`` on Windows) and
holding the owner's process id, host and command. The kernel releases the lock when
its process ends, however it ends, so a lock left by a killed process is recognised as
stale and taken over without a word; a second live writer gets a
:class:`~pyro_vae.errors.UsageError` that names the holder.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from pyro_vae.errors import UsageError

try:  # POSIX
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

except ImportError:  # Windows
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True


#: the lock's file inside the folder it guards
LOCK_NAME = ".lock"


class FolderLocked(UsageError):
    """Another live process writes into the folder."""


def holder(folder: str | Path) -> dict | None:
    """What the lock file of ``folder`` says about its holder (``pid``, ``host``,
    ``command``, ``since``), or ``None`` when it says nothing readable. The file of a
    released or stale lock may still name its last holder: only :func:`hold` knows
    whether the lock is held."""
    try:
        info = json.loads((Path(folder) / LOCK_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


@contextmanager
def hold(folder: str | Path, command: str) -> Iterator[Path]:
    """Hold the exclusive lock of ``folder`` for the block, creating the folder if it
    does not exist (and removing it again, if it is still empty, when the block fails).

    :param folder: the run folder.
    :param str command: what the holder does, for the message of a second writer
        (``"pyro-vae train"``).
    :returns: a context manager yielding the folder.
    :raises FolderLocked: while another live process holds the lock.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = _acquire(path, folder)
    failed = True
    try:
        os.ftruncate(fd, 0)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command,
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.write(fd, json.dumps(record).encode())
        yield folder
        failed = False
    finally:
        # unlink, then release: a process that opened the old file and takes its lock
        # sees that the path no longer names that file, and tries again
        with suppress(OSError):  # gone already; or Windows, which keeps it while open
            path.unlink()
        os.close(fd)
        if failed and created:
            with suppress(OSError):  # not empty: a user's file, or output worth keeping
                folder.rmdir()


def _acquire(path: Path, folder: Path) -> int:
    """An open descriptor of ``path`` holding its lock."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        if not _try_lock(fd):
            os.close(fd)
            raise FolderLocked(_busy(folder))
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else the holder released it (and unlinked the file) meanwhile
            return fd
        os.close(fd)


def _busy(folder: Path) -> str:
    info = holder(folder) or {}
    who = f"process {info['pid']}" if "pid" in info else "another process"
    if info.get("host") and info["host"] != socket.gethostname():
        who += f" on {info['host']}"
    doing = f" ({info['command']}, since {info.get('since', '?')})" if "command" in info else ""
    return (
        f"{folder} is in use by {who}{doing}; wait for it to finish, or stop it, "
        "then run this command again"
    )
