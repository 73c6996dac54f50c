"""Diagnostics of a diagonal Gaussian posterior ``Q(z|X) = N(loc, diag(scale^2))``.

The first two take the posterior's parameters as tensors (what an encoder returns),
not a model, so they apply to any model whose guide is a diagonal Gaussian:

- :func:`kl_to_standard_normal`: the KL term of the ELBO against the prior
  ``P(z) = N(0, I)``, in closed form, per latent unit;
- :func:`active_units`: how many latent units the posterior means use at all
  (Burda et al. 2016).

The others take a Pyro model and guide, or a prior, whatever the families:

- :func:`kl_term`: the KL term ``E_x E_Q[log Q(z|X) - log P(z)]`` by Monte Carlo;
- :func:`mixture_usage`: how much of the aggregate posterior each component of a
  mixture prior explains, and :func:`perplexity`, the number of components in use.

References:

- D. P. Kingma, M. Welling. Auto-Encoding Variational Bayes. ICLR 2014, appendix B.
- C. Doersch. Tutorial on Variational Autoencoders. arXiv:1606.05908, eq. 7.
- Y. Burda, R. Grosse, R. Salakhutdinov. Importance Weighted Autoencoders.
  ICLR 2016.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import pyro.distributions as dist
import torch
from pyro import poutine

#: Burda et al. 2016: latent unit d is active if ``Var_x(E_q[z_d])`` exceeds this
ACTIVE_UNIT_THRESHOLD = 0.01


def kl_to_standard_normal(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Elementwise ``D[N(loc, scale^2) || N(0, 1)] = (scale^2 + loc^2 - 1 - 2 log scale) / 2``.

    The KL term of a diagonal Gaussian posterior against the prior ``N(0, I)`` is the
    sum of the result over the last dimension (Doersch eq. 7); a unit's KL term
    averaged over data points is its mean over the first.

    :param torch.Tensor loc: posterior means, e.g. ``(N, z_dim)``.
    :param torch.Tensor scale: posterior standard deviations (positive), broadcastable
        with ``loc``.
    :returns: the KL in nats, of the broadcast shape of ``loc`` and ``scale``.

    References:

    - D. P. Kingma, M. Welling. Auto-Encoding Variational Bayes. ICLR 2014, appendix B.
    - C. Doersch. Tutorial on Variational Autoencoders. arXiv:1606.05908, eq. 7.
    """
    # 2 log(scale) rather than log(scale^2): the same value in exact arithmetic, and
    # the rounding the experiments' results were computed with
    return 0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log())


class ActiveUnits(NamedTuple):
    """Which latent units the posterior means use.

    :ivar count: the number of units whose activity exceeds the threshold.
    :ivar activity: ``(z_dim,)``: per unit, the variance over data points of the
        posterior mean ``E_q[z_d]``.
    """

    count: int
    activity: torch.Tensor


@torch.no_grad()
def active_units(loc: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> ActiveUnits:
    """The active latent units of posterior means ``loc`` (Burda et al. 2016).

    Unit d is active if ``Var_x(E_q[z_d]) > threshold``: an inactive unit's posterior
    mean hardly moves with X, so it carries almost no information about X.

    :param torch.Tensor loc: ``(N, z_dim)``: the posterior means of N data points.
    :param float threshold: the activity above which a unit counts as active.
    :returns: :class:`ActiveUnits`.
    :raises ValueError: if ``loc`` is not ``(N, z_dim)`` with ``N >= 2``.

    References:

    - Y. Burda, R. Grosse, R. Salakhutdinov. Importance Weighted Autoencoders.
      ICLR 2016.
    """
    if loc.dim() != 2 or loc.shape[0] < 2:
        raise ValueError(
            f"active_units needs posterior means of shape (N, z_dim) with N >= 2, "
            f"got shape {tuple(loc.shape)}"
        )
    activity = loc.var(0)  # (z_dim,); unbiased, over data points
    return ActiveUnits(int((activity > threshold).sum()), activity)


@torch.no_grad()
def kl_term(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    sites: Sequence[str],
    draws: int = 10,
    batch_size: int = 1000,
) -> tuple[float, dict[str, torch.Tensor]]:
    """The KL term of the ELBO, ``E_x E_Q[log Q(z|X) - log P(z)]`` summed over the
    latent ``sites``, by ``draws`` samples of the guide per data point: what the ELBO
    pays for the information the latents carry (the "rate"), whatever the prior and the
    guide family. Each draw runs ``guide`` and replays ``model`` on its latents, so the
    log densities are the ones training uses.

    :param model: a Pyro model taking ``x``.
    :param guide: its guide.
    :param torch.Tensor x: ``(N, ...)`` data points.
    :param sites: the latent sites whose terms are summed.
    :param int draws: guide samples per data point.
    :param int batch_size: data points per pass.
    :returns: ``(kl, first_draws)``: the KL term in nats per data point, and the first
        draw of each site for every data point, ``{site: (N, ...)}`` (samples of the
        aggregate posterior).
    """
    total = 0.0
    first: dict[str, list[torch.Tensor]] = {site: [] for site in sites}
    for chunk in x.split(batch_size):
        for draw in range(draws):
            guide_trace = poutine.trace(guide).get_trace(chunk)
            replayed = poutine.replay(model, trace=guide_trace)
            model_trace = poutine.trace(replayed).get_trace(chunk)
            for site in sites:
                value = guide_trace.nodes[site]["value"]
                q = guide_trace.nodes[site]["fn"].log_prob(value)
                p = model_trace.nodes[site]["fn"].log_prob(value)
                total += float((q - p).sum())
                if draw == 0:
                    first[site].append(value)
    return total / (draws * len(x)), {site: torch.cat(v) for site, v in first.items()}


@torch.no_grad()
def mixture_usage(prior: dist.Distribution, z: torch.Tensor) -> torch.Tensor | None:
    """How much of the aggregate posterior each component of a mixture prior explains:
    the responsibility ``P(k|z) = pi_k P_k(z) / P(z)`` averaged over ``z``, for ``z``
    drawn from the guide at the data (:func:`kl_term`'s first draws).

    :param prior: ``P(z)``; a :class:`~torch.distributions.MixtureSameFamily` (the
        mixture and VampPrior families), else there are no components to use.
    :param torch.Tensor z: ``(N, z_dim)``.
    :returns: ``(K,)`` non-negative, summing to one; ``None`` for a prior that is not a
        mixture.
    """
    if not isinstance(prior, torch.distributions.MixtureSameFamily):
        return None
    log_weights = prior.mixture_distribution.logits.log_softmax(-1)
    log_components = prior.component_distribution.log_prob(z.unsqueeze(-2))  # (N, K)
    return (log_weights + log_components).softmax(-1).mean(0)


def perplexity(probs: torch.Tensor) -> float:
    """``exp(entropy)`` of a distribution over K outcomes: the number of outcomes in use,
    K when all are equally likely and 1 when one takes everything."""
    probs = probs.double()
    logs = torch.where(probs > 0, probs.log(), torch.zeros_like(probs))
    return float(torch.exp(-(probs * logs).sum()))
