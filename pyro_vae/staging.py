"""Replace a run only once its successor is whole: ``pyro-vae train --overwrite``.

The new run trains in a staging folder inside the old one (:data:`STAGE`), so that a
failure, a refusal or a kill leaves the old run as it was. When it has finished,
:func:`promote` puts it in the old run's place: the old run's files move aside into
:data:`REPLACED`, the new ones move up (the checkpoint last), and the old ones are
deleted. Every move is a rename within the folder, and :func:`recover`, called by the
next command that takes the folder's lock, finishes or undoes a promotion that a kill
interrupted. Files that belong to no run (a user's notes) stay where they are.

Call these functions while holding the folder's lock (:func:`pyro_vae.locks.hold`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

#: the folder, inside the run folder, where the new run trains
STAGE = ".overwrite"
#: where the old run's files wait while the new ones move in
REPLACED = ".replaced"
#: the file whose arrival completes a promotion: it moves last
LAST = "checkpoint.pt"


def stage(folder: str | Path) -> Path:
    """An empty staging folder inside ``folder`` (a leftover of a failed or killed
    attempt is removed first).

    :returns: its path.
    """
    staged = Path(folder) / STAGE
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    return staged


def discard(folder: str | Path) -> None:
    """Remove the staging folder of ``folder`` and what it holds."""
    shutil.rmtree(Path(folder) / STAGE, ignore_errors=True)


def promote(folder: str | Path, stale: Iterable[str]) -> list[str]:
    """Put the staged run in the place of the run in ``folder``.

    :param folder: the run folder.
    :param stale: glob patterns of the files of the old run (and of the commands run
        on it) to replace; other files stay.
    :returns: the names of the files that moved in.
    """
    folder = Path(folder)
    staged, aside = folder / STAGE, folder / REPLACED
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir()
    for pattern in stale:
        for old in folder.glob(pattern):
            if old.is_file():
                os.replace(old, aside / old.name)
    names = sorted(p.name for p in staged.iterdir() if p.is_file())
    names.sort(key=lambda name: name == LAST)  # the checkpoint last: it marks the end
    for name in names:
        os.replace(staged / name, folder / name)
    shutil.rmtree(staged)
    shutil.rmtree(aside)
    return names


def recover(folder: str | Path) -> str | None:
    """Finish or undo a promotion of ``folder`` that was interrupted, and remove the
    staging folder of a failed or killed run.

    A promotion whose checkpoint has moved in is finished (the old files are deleted);
    one that stopped earlier is undone (the old files move back).

    :returns: what was done, for a message; ``None`` when there was nothing to do.
    """
    folder = Path(folder)
    staged, aside = folder / STAGE, folder / REPLACED
    done = None
    if aside.is_dir():
        if (staged / LAST).exists():  # interrupted before the checkpoint moved in: undo
            for old in aside.iterdir():
                os.replace(old, folder / old.name)
            done = "restored the earlier run, whose replacement was interrupted"
        else:
            done = "finished replacing the earlier run"
        shutil.rmtree(aside)
    if staged.exists():
        shutil.rmtree(staged, ignore_errors=True)
        done = done or "removed the unfinished run of an interrupted --overwrite"
    return done
