"""One unit for every likelihood: bits per dimension of the original discrete pixels.

Log-likelihoods of discrete and continuous models are only comparable on the
same data. For images stored with ``levels`` grey levels:

- a **discrete** likelihood (discretized logistic; Bernoulli of binarized data,
  ``levels = 2``) gives ``log P(k)`` directly: ``bits/dim = -log P(k) / (D ln 2)``;
- a **continuous** density ``p`` is evaluated on uniformly dequantized pixels
  ``y = (k + u) / levels`` and corrected by the change of variables from ``[0, 1)``
  to bins of width ``1 / levels``: ``log P(k) >= E_u[log p(y)] - D ln(levels)``, so
  ``bits/dim = -(log p(y) - D ln levels) / (D ln 2) = -log p(y) / (D ln 2) + log2(levels)``.

A continuous density on data that were *not* dequantized (grey levels as they are)
has no such interpretation: it can exceed any discrete probability, so it gets no
bits/dim here. Bernoulli models of binarized images describe a different data set
(2 levels); keep them in their own column.

References:

- L. Theis, A. van den Oord, M. Bethge. A note on the evaluation of generative
  models. ICLR 2016.
"""

from __future__ import annotations

import math

import torch


def bits_per_dim(
    log_p: torch.Tensor | float,
    num_dims: int,
    *,
    discrete: bool,
    levels: int | None = None,
    dequantized: bool = False,
) -> torch.Tensor | float | None:
    """Convert a log-likelihood in nats (per data point) to bits per dimension.

    :param log_p: ``log P`` in nats, a number or a tensor of per-point values.
    :param int num_dims: dimensions per data point (pixels).
    :param bool discrete: ``log_p`` is a log-probability of the discrete pixels.
    :param levels: grey levels, needed for a continuous density on dequantized data.
    :param bool dequantized: a continuous density was evaluated on ``(k + u) / levels``.
    :returns: bits per dimension (lower is better), or ``None`` when the number is
        not comparable (a continuous density on data that were not dequantized).
    """
    if discrete:
        return -log_p / (num_dims * math.log(2))
    if not dequantized or levels is None:
        return None
    return -(log_p - num_dims * math.log(levels)) / (num_dims * math.log(2))


def comparable_bits_per_dim(model, dataset, log_p):
    """``log_p`` (nats per data point) of ``model`` on ``dataset`` in bits per dimension
    of its target, or ``None`` where not comparable (see :func:`bits_per_dim`).

    Discrete likelihoods count directly (Bernoulli of binarized images: bits of the
    binarized data); continuous densities only on dequantized data.

    :param model: a :class:`~pyro_vae.models.base.Model`.
    :param dataset: the :class:`~pyro_vae.data.Dataset` it was scored on.
    """
    return bits_per_dim(
        log_p,
        model.data_dims[-1],
        discrete=model.likelihood.discrete,
        levels=dataset.levels,
        dequantized=dataset.dequantized,
    )
