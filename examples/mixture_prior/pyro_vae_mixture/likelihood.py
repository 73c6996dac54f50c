"""A likelihood for pyro_vae written outside it: Student's t, a heavy-tailed Gaussian.

Its two settings are constructor arguments kept in attributes of the same name, so a
run's ``config.json`` stores them and ``--resume`` refuses a run built with others.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from pyro_vae.likelihoods import Likelihood


class StudentT(Likelihood):
    """``P(x|z) = StudentT(df, loc=decoder(z), scale)`` per pixel: the Gaussian's
    squared error becomes ``log(1 + error^2 / (df scale^2))``, so a few badly
    reconstructed pixels cost less than under the Gaussian.

    :param float df: degrees of freedom (the Gaussian as ``df`` grows).
    :param float scale: the scale of every pixel.
    """

    name = "student-t"
    support = constraints.real

    def __init__(self, df: float = 3.0, scale: float = 0.1) -> None:
        super().__init__()
        if not (df > 0 and scale > 0):
            raise ValueError(f"df and scale must be positive, got {df} and {scale}")
        self.df = float(df)
        self.scale = float(scale)

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        """The distribution of the pixels, one event dimension."""
        return dist.StudentT(self.df, out, torch.full_like(out, self.scale)).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        """The location: Student's t has no mean for ``df <= 1``."""
        return out
