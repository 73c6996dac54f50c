"""Memory checks before allocation: a network (or a training step) whose tensors need
more memory than is free is refused with a :class:`~pyro_vae.errors.UsageError` that
names the size it would need, before torch allocates it.

Without the check, an allocation larger than the machine fails with a traceback, and
one that the system over-commits succeeds and then gets the process killed as its
pages are written. Each network checks itself as it is built, against the memory free
at that moment (which the networks built before it have already taken);
:func:`pyro_vae.fit` checks what training adds (gradients, Adam's moments, a step's
likelihood parameters).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from pyro_vae.errors import UsageError

#: below this many bytes nothing is checked: such tensors fit any machine that runs
#: torch, and reading the free memory would cost more than it saves
CHECK_FROM_BYTES = 2**26
#: where Linux says how much memory can be allocated without swapping
MEMINFO = Path("/proc/meminfo")
#: the limit and the use of this process's control group (cgroup v2), where it has one
CGROUP = Path("/sys/fs/cgroup")


def free_bytes() -> int | None:
    """The bytes this process can still allocate: the system's available memory
    (``MemAvailable``, or the free physical pages), and less under a control group's
    limit; ``None`` where none of them can be read."""
    free = None
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, OSError, ValueError):
            pass
    try:
        limit = (CGROUP / "memory.max").read_text().strip()
        if limit != "max":
            room = int(limit) - int((CGROUP / "memory.current").read_text())
            free = room if free is None else min(free, room)
    except (OSError, ValueError):
        pass
    return free


def gigabytes(n: int) -> str:
    """``n`` bytes as messages show them: ``"8,796.1 GB"``, ``"3.2 GB"``, ``"68 MB"``."""
    return f"{n / 1e9:,.1f} GB" if n >= 1e8 else f"{n / 1e6:,.0f} MB"


def check_fits(numbers: int, what: str, fix: str, settings: Sequence[str] = ()) -> None:
    """Refuse to allocate ``numbers`` numbers of torch's default dtype (float32) when they
    need more bytes than are free (:func:`free_bytes`).

    :param str what: what they are, as the message names it (``"the network 64-400-40"``).
    :param str fix: what to do instead; may name settings as ``{placeholders}``.
    :param settings: the settings ``fix`` names (:class:`~pyro_vae.errors.Worded`).
    :raises UsageError: "``what`` needs N GB ...".
    """
    need = int(numbers) * torch.get_default_dtype().itemsize
    if need < CHECK_FROM_BYTES:
        return
    free = free_bytes()
    if free is not None and need > free:
        raise UsageError(
            f"{what} needs {gigabytes(need)} for {int(numbers):,} numbers, more than the "
            f"{gigabytes(free)} of memory free; {fix}",
            settings=settings,
        )


def dense_parameters(widths: Sequence[int]) -> int:
    """The weights and biases of fully connected layers through ``widths``."""
    return sum(int(a) * int(b) + int(b) for a, b in itertools.pairwise(widths))
