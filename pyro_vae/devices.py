"""Device names: ``"cpu"``, ``"cuda"``, ``"cuda:N"``."""

from __future__ import annotations

import torch

from pyro_vae.errors import UsageError


def resolve_device(name: str | torch.device) -> torch.device:
    """Parse a device name (the ``device`` setting).

    :raises UsageError: if it names no usable device.
    """
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise UsageError(
            f"unknown device {name!r} ({err}); use cpu, cuda or cuda:N", settings=("device",)
        ) from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"{{device}} {name}: CUDA is not available on this machine; use {{device}} cpu",
                settings=("device",),
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(
                f"{{device}} {name}: only {torch.cuda.device_count()} CUDA device(s) present",
                settings=("device",),
            )
    elif device.type != "cpu":
        raise UsageError(f"unsupported device {name!r}; use cpu, cuda or cuda:N")
    return device
