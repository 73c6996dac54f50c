"""Plain :class:`torch.nn.Module` networks. No Pyro calls in here: the model and
guide in :mod:`pyro_vae.vae` decide what is random and register these modules."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class MLP(nn.Sequential):
    """Fully connected network: ``Linear -> activation`` per hidden layer, then ``Linear``.

    :param int in_dim: input features.
    :param hidden_dims: widths of the hidden layers (may be empty).
    :param int out_dim: output features.
    :param activation: module class applied after each hidden layer.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dims: Sequence[int],
        out_dim: int,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        dims = [in_dim, *hidden_dims]
        layers: list[nn.Module] = []
        for d_in, d_out in itertools.pairwise(dims):
            layers += [nn.Linear(d_in, d_out), activation()]
        layers.append(nn.Linear(dims[-1], out_dim))
        super().__init__(*layers)


class GaussianEncoder(nn.Module):
    """Maps ``x`` to the ``loc`` and ``scale`` of a diagonal Gaussian over ``z``.

    ``scale = softplus(raw) + min_scale``: softplus keeps gradients tame where
    ``exp`` of a log-variance would overflow, and the floor keeps ``log q(z|x)``
    finite early in training.

    :param int in_dim: input features (pixels).
    :param hidden_dims: hidden layer widths.
    :param int z_dim: latent dimension.
    :param float min_scale: lower bound on every standard deviation.
    :param activation: module class after each hidden layer (ReLU by default).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dims: Sequence[int],
        z_dim: int,
        min_scale: float = 1e-4,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.min_scale = min_scale
        self.net = MLP(in_dim, hidden_dims, 2 * z_dim, activation=activation)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:returns: ``(loc, scale)``, each of shape ``(batch, z_dim)``."""
        loc, raw_scale = self.net(x).split(self.z_dim, dim=-1)
        return loc, F.softplus(raw_scale) + self.min_scale
