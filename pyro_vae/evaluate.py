"""Evaluation of trained model/guide pairs: ELBO per data point.

Functions here take any Pyro ``model`` and ``guide`` and the data tensors they
are called with; they know nothing about VAEs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from pyro.infer import Trace_ELBO


@torch.no_grad()
def mean_elbo(
    model: Callable,
    guide: Callable,
    data: torch.Tensor | Sequence[torch.Tensor],
    *,
    num_particles: int = 1,
    batch_size: int = 1000,
    max_plate_nesting: int = 1,
) -> float:
    """ELBO per data point, averaged over ``data`` (no KL weight), in nats.

    :param model: Pyro model taking the data tensors as positional arguments.
    :param guide: matching guide.
    :param data: a tensor or tuple of tensors sharing their first dimension.
    :param int num_particles: samples of z per data point (vectorized).
    :param int batch_size: data points per forward pass.
    :param int max_plate_nesting: plates the model nests.
    """
    data = tuple(data) if isinstance(data, (tuple, list)) else (data,)
    objective = Trace_ELBO(
        num_particles=num_particles,
        vectorize_particles=num_particles > 1,
        max_plate_nesting=max_plate_nesting,
    )
    n = data[0].shape[0]
    total = torch.zeros((), device=data[0].device)
    for start in range(0, n, batch_size):
        batch = tuple(t[start : start + batch_size] for t in data)
        total += objective.differentiable_loss(model, guide, *batch)
    return -total.item() / n
