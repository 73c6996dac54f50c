"""Diagnostics of a diagonal Gaussian posterior ``Q(z|X) = N(loc, diag(scale^2))``.

Both functions take the posterior's parameters as tensors (what an encoder returns),
not a model, so they apply to any model whose guide is a diagonal Gaussian:

- :func:`kl_to_standard_normal`: the KL term of the ELBO against the prior
  ``P(z) = N(0, I)``, in closed form, per latent unit;
- :func:`active_units`: how many latent units the posterior means use at all
  (Burda et al. 2016).

References:

- D. P. Kingma, M. Welling. Auto-Encoding Variational Bayes. ICLR 2014, appendix B.
- C. Doersch. Tutorial on Variational Autoencoders. arXiv:1606.05908, eq. 7.
- Y. Burda, R. Grosse, R. Salakhutdinov. Importance Weighted Autoencoders.
  ICLR 2016.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

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
