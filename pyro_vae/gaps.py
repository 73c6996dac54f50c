"""Where the ELBO gap comes from: approximation versus amortization.

``log P(x) - ELBO[q]`` (Doersch eq. 5: the KL from ``Q(z|x)`` to the true
posterior) splits into two parts (Cremer, Li and Duvenaud 2018):

- the **approximation gap** ``log P(x) - ELBO[q*]``, where ``q*`` is the best
  diagonal Gaussian for this one data point: the price of the variational family;
- the **amortization gap** ``ELBO[q*] - ELBO[q]``: the price of predicting the
  posterior with one encoder for all data points instead of fitting it per point.

:func:`decompose_gap` finds ``q*`` by SVI separately for every data point
(jointly, in blocks of points: the ELBO is a sum over points), starting from the
encoder's output, with the decoder frozen.

References:

- C. Cremer, X. Li, D. Duvenaud. Inference Suboptimality in Variational
  Autoencoders. ICML 2018.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import pyro
import torch
from pyro.infer import Trace_ELBO
from torch import nn

from pyro_vae import distributed
from pyro_vae.evaluate import log_likelihood


class GapDecomposition(NamedTuple):
    """Per-point parts of the ELBO gap, in nats; each tensor has shape ``(N,)``.

    :ivar log_px: importance-sampled ``log P(x)`` with ``q*`` as proposal.
    :ivar elbo_amortized: ELBO of the encoder's ``q(z|x)``.
    :ivar elbo_optimal: ELBO of the per-point optimum ``q*``.
    :ivar approximation_gap: ``log_px - elbo_optimal``.
    :ivar amortization_gap: ``elbo_optimal - elbo_amortized``.
    :ivar steps: SVI steps used to fit ``q*``.
    :ivar num_samples: importance samples per point.
    """

    log_px: torch.Tensor
    elbo_amortized: torch.Tensor
    elbo_optimal: torch.Tensor
    approximation_gap: torch.Tensor
    amortization_gap: torch.Tensor
    steps: int
    num_samples: int


class LocalGuide(nn.Module):
    """A free member ``q_i(z)`` of a guide family for each of N data points: the
    family's parameters of every point, initialized from the encoder's output and
    optimized directly (:mod:`pyro_vae.guides`; for the IAF, the base Gaussian and
    the context, with the flow's weights those of the encoder).

    :param family: a :class:`~pyro_vae.guides.GuideFamily`.
    :param encoder: the model's encoder (the flow of an IAF lives there).
    :param params: the encoder's output for the N points.
    """

    def __init__(self, family, encoder: nn.Module, params: tuple[torch.Tensor, ...]) -> None:
        super().__init__()
        self.family = family
        self.__dict__["encoder"] = encoder  # not a submodule: its weights stay frozen
        self.free = nn.ParameterList(nn.Parameter(t.detach().clone()) for t in family.free(params))

    def params(self, rows: slice = slice(None)) -> tuple[torch.Tensor, ...]:
        """The family's parameters of the points ``rows`` (for a diagonal Gaussian:
        ``loc`` and ``scale``)."""
        return self.family.constrained(tuple(t[rows] for t in self.free))

    def guide(self, x: torch.Tensor, rows: slice = slice(None)) -> None:
        """``z_i ~ q_i`` under ``pyro.plate("data")``; ``x`` gives N only.

        :param slice rows: the points ``x`` holds (all by default).
        """
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", self.family.distribution(self.encoder, self.params(rows)))

    def guide_for(self, i: int):
        """The guide of point ``i`` alone: a function of a ``(1, x_dim)`` batch."""
        return functools.partial(self.guide, rows=slice(i, i + 1))


def fit_local_guide(
    model,
    x: torch.Tensor,
    *,
    steps: int = 500,
    lr: float = 1e-2,
    num_particles: int = 10,
) -> LocalGuide:
    """Fit ``q*(z)`` per data point by SVI on ``Trace_ELBO``, starting from the encoder.

    The model's weights are frozen (``requires_grad`` is restored afterwards).

    :param model: a :class:`~pyro_vae.models.base.Model` that supports
        ``"gap_decomposition"``, such as :class:`~pyro_vae.models.vae.VAE`: its
        :meth:`~pyro_vae.models.base.Model.guide_parts` name the guide family and the
        encoder of its one latent site ``"z"``. ``q*`` is a member of the same family.
    :param x: ``(N, x_dim)`` data points.
    :param int steps: Adam steps.
    :param float lr: Adam step size.
    :param int num_particles: samples of z per point per step (vectorized).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    family, encoder = model.guide_parts()
    with torch.no_grad():
        params = encoder(x)
    local = LocalGuide(family, encoder, params)
    elbo = Trace_ELBO(
        num_particles=num_particles,
        vectorize_particles=num_particles > 1,
        max_plate_nesting=model.max_plate_nesting,
    )
    optimizer = torch.optim.Adam(local.parameters(), lr=lr)
    was_training = model.training
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()  # pyro.module warns about frozen parameters of modules in training mode
    try:
        for p, _ in frozen:
            p.requires_grad_(False)
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            elbo.differentiable_loss(model.model, local.guide, x).backward()
            optimizer.step()
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
        model.train(was_training)
    return local


#: data points whose q* are fitted together, from one random stream: fixed, so that
#: the fits do not depend on how the points are split across processes
GAP_BLOCK = 25


@torch.no_grad()
def _point_log_likelihood(model, guide, x, num_samples, seed, purpose, index):
    torch.manual_seed(distributed.stream_seed(seed, purpose, index))
    return log_likelihood(model, guide, x, num_samples=num_samples)


def decompose_gap(
    model,
    x: torch.Tensor,
    *,
    steps: int = 500,
    lr: float = 1e-2,
    num_particles: int = 10,
    num_samples: int = 5000,
    seed: int | None = None,
) -> GapDecomposition:
    """Split ``log P(x) - ELBO[q]`` into approximation and amortization gaps per point.

    ``ELBO[q]`` and ``ELBO[q*]`` are the mean log weights of ``num_samples``
    samples; ``log P(x)`` is importance-sampled with ``q*`` as proposal, the
    tighter of the two.

    The points are fitted in blocks of :data:`GAP_BLOCK`, each block from its own
    random stream, and every point's importance samples come from a stream of its
    own (:func:`~pyro_vae.distributed.stream_seed`), so the results do not depend on
    the number of processes. Inside a process group every rank must call this with
    the same arguments; the blocks are split across ranks and every rank returns all
    results in the original order, on the CPU. Torch's global random state is left as
    it was, apart from drawing the base seed when ``seed`` is ``None``.

    :param model: a trained model, as for :func:`fit_local_guide`.
    :param x: ``(N, x_dim)`` data points.
    :param int steps: SVI steps for ``q*`` (see :func:`fit_local_guide`).
    :param float lr: their Adam step size.
    :param int num_particles: samples per step.
    :param int num_samples: importance samples per point for the estimates.
    :param int seed: the base of the random streams; ``None`` draws one from torch's
        global generator.
    """
    if seed is None:
        seed = distributed.broadcast(int(torch.randint(0, 2**62, ()).item()))
    n = x.shape[0]
    starts = list(range(0, n, GAP_BLOCK))
    rows = []
    with torch.random.fork_rng(devices=distributed.rng_devices(x)):
        for b in distributed.shard(len(starts)):
            block = range(starts[b], min(starts[b] + GAP_BLOCK, n))
            torch.manual_seed(distributed.stream_seed(seed, "gap-fit", block.start))
            xb = x[block.start : block.stop]
            local = fit_local_guide(model, xb, steps=steps, lr=lr, num_particles=num_particles)
            for j, i in enumerate(block):
                xi = x[i : i + 1]
                amortized = _point_log_likelihood(
                    model.model, model.guide, xi, num_samples, seed, "gap-amortized", i
                )
                optimal = _point_log_likelihood(
                    model.model, local.guide_for(j), xi, num_samples, seed, "gap-optimal", i
                )
                rows.append(torch.cat([optimal.log_px, amortized.elbo, optimal.elbo]))
    mine = torch.stack(rows).cpu() if rows else torch.empty(0, 3, dtype=x.dtype)
    log_px, elbo_amortized, elbo_optimal = torch.cat(distributed.all_gather(mine)).T
    return GapDecomposition(
        log_px=log_px,
        elbo_amortized=elbo_amortized,
        elbo_optimal=elbo_optimal,
        approximation_gap=log_px - elbo_optimal,
        amortization_gap=elbo_optimal - elbo_amortized,
        steps=steps,
        num_samples=num_samples,
    )
