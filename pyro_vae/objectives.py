"""What training optimizes: Pyro's objectives by name, and the KL weight.

- ``"elbo"``: :class:`~pyro.infer.Trace_ELBO`, the ELBO with a Monte Carlo KL term;
- ``"mean-field"``: :class:`~pyro.infer.TraceMeanField_ELBO`, the analytic KL of
  Doersch's equation 7 where the distributions have one;
- ``"iwae"``: :class:`DifferentiableRenyiELBO` at ``alpha = 0``, the IWAE bound of
  Burda et al. (2016), Pyro's :class:`~pyro.infer.RenyiELBO` with a
  ``differentiable_loss``.

The KL weight (beta, warm-up) multiplies the log-densities of every latent
sample site in both model and guide (:func:`scale_latents`), so for
``Trace_ELBO`` the objective is ``E_q[log P(x|z)] - beta * KL``.
How one step of training uses them is in :mod:`pyro_vae.engine`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pyro.infer import RenyiELBO, Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO
from pyro.infer.util import get_dependent_plate_dims, is_identically_zero, torch_sum
from pyro.poutine.scale_messenger import ScaleMessenger

from pyro_vae.errors import UsageError

#: objective names of :func:`make_objective`
OBJECTIVES = ("elbo", "mean-field", "iwae")


class LatentScaleMessenger(ScaleMessenger):
    """``poutine.scale`` restricted to latent (unobserved) sample sites.

    See :func:`scale_latents`.
    """

    def _process_message(self, msg) -> None:
        if msg["type"] == "sample" and not msg["is_observed"]:
            super()._process_message(msg)


def scale_latents(fn: Callable, scale: float) -> Callable:
    """Wrap a model or guide so the log-densities of its latent sites are multiplied by ``scale``.

    Applied to both model and guide, it multiplies ``log P(z)`` and ``log Q(z|x)``
    by ``scale`` and leaves ``log P(x|z)`` alone: for ``Trace_ELBO`` the objective
    becomes ``E_q[log P(x|z)] - scale * KL``, the beta-VAE weight and the KL
    warm-up of Bowman et al. (2016) and Sønderby et al. (2016).

    :param fn: a Pyro model or guide.
    :param float scale: the KL weight; must be > 0, as for ``poutine.scale``.
    :returns: the wrapped callable.
    """
    return LatentScaleMessenger(scale)(fn)


def make_objective(
    name: str, num_particles: int = 1, max_plate_nesting: int = 1, enumerate: bool = False
):
    """Build a Pyro objective by name.

    :param str name: ``"elbo"`` (``Trace_ELBO``), ``"mean-field"``
        (``TraceMeanField_ELBO``, analytic KL) or ``"iwae"`` (``RenyiELBO(alpha=0)``).
    :param int num_particles: samples per data point, vectorized when > 1.
    :param int max_plate_nesting: plates the model nests (needed to vectorize particles).
    :param bool enumerate: the guide marks discrete sites for parallel enumeration
        (:attr:`~pyro_vae.models.base.Model.enumerated_sites`): ``"elbo"`` is then
        ``TraceEnum_ELBO``, which sums over their values exactly; the others are refused.
    :returns: a :class:`pyro.infer.ELBO` instance.
    :raises UsageError: for an unknown name, or one that cannot enumerate.
    """
    kwargs = dict(
        num_particles=num_particles,
        vectorize_particles=num_particles > 1,
        max_plate_nesting=max_plate_nesting,
    )
    if enumerate and name in OBJECTIVES:
        if name != "elbo":
            raise UsageError(
                f"{{objective}} {name} cannot sum this model's discrete latent sites out; "
                "use {objective} elbo (TraceEnum_ELBO, which sums them exactly)",
                settings=("objective",),
            )
        return TraceEnum_ELBO(**kwargs)
    if name == "elbo":
        return Trace_ELBO(**kwargs)
    if name == "mean-field":
        return TraceMeanField_ELBO(**kwargs)
    if name == "iwae":
        return DifferentiableRenyiELBO(alpha=0.0, **kwargs)
    raise UsageError(
        f"unknown {{objective}} {name!r}; valid names: {', '.join(OBJECTIVES)}",
        settings=("objective",),
    )


class DifferentiableRenyiELBO(RenyiELBO):
    """Pyro's :class:`~pyro.infer.RenyiELBO` with a ``differentiable_loss``.

    It forms ``loss_and_grads``'s two quantities from the same traces
    (``RenyiELBO._get_traces``), summed over the same plates: the per-particle log
    weights, whose log-mean-exp gives the value, and the surrogate whose gradient,
    weighted by the normalized weights, is the estimator. It returns
    ``value + surrogate - surrogate.detach()``: a tensor whose value is
    ``RenyiELBO.loss``'s and whose gradient is the one ``loss_and_grads`` accumulates,
    which the caller can scale and backpropagate (through
    ``DistributedDataParallel``, say).
    """

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The negative Rényi bound as a differentiable 0-dim tensor.

        :raises NotImplementedError: for a guide site whose samples are partly
            reparameterized, as ``RenyiELBO.loss_and_grads`` does.
        """
        log_weights, surrogates = [], []
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
            log_w, surrogate = 0.0, 0.0
            for site in model_trace.nodes.values():
                if site["type"] == "sample":
                    log_p = torch_sum(site["log_prob"], sum_dims)
                    log_w, surrogate = log_w + log_p.detach(), surrogate + log_p
            for site in guide_trace.nodes.values():
                if site["type"] != "sample":
                    continue
                log_q = torch_sum(site["log_prob"], sum_dims)
                log_w = log_w - log_q.detach()
                _, score_function, entropy = site["score_parts"]
                if not is_identically_zero(entropy):
                    if not is_identically_zero(score_function):
                        raise NotImplementedError(
                            f"guide site {site['name']!r} is partly reparameterized, which "
                            "RenyiELBO does not support"
                        )
                    surrogate = surrogate - log_q
                elif not is_identically_zero(score_function):
                    surrogate = surrogate + self.alpha / (1.0 - self.alpha) * log_q
            log_weights.append(torch.as_tensor(log_w))
            surrogates.append(torch.as_tensor(surrogate))
        if self.vectorize_particles and self.num_particles > 1:
            log_w, surrogate = log_weights[0], surrogates[0]
        else:
            log_w, surrogate = torch.stack(log_weights), torch.stack(surrogates)
        scaled = (1.0 - self.alpha) * log_w
        log_mean = torch.logsumexp(scaled, dim=0, keepdim=True) - math.log(self.num_particles)
        value = log_mean.sum() / (1.0 - self.alpha)
        weighted = ((scaled - log_mean).exp() * surrogate).sum() / self.num_particles
        return -(value + weighted - weighted.detach())
