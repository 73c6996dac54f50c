"""Likelihoods P(x|z): small objects that turn decoder output into a Pyro distribution.

A likelihood is a value handed to the model's constructor, so swapping
Bernoulli for Gaussian (or your own) changes nothing else in the model, the
guide or the training loop. Each one says how many decoder outputs it needs per
data dimension (:attr:`Likelihood.params_per_dim`), which values it supports,
and returns a distribution with one event dimension (the flattened pixels), so
that a ``pyro.plate("data")`` indexes data points.

A likelihood is an :class:`torch.nn.Module`, so learnable parameters (a learned
sigma, say) live in it and the model registers them with ``pyro.module`` like
the networks.

Registry names (``--likelihood``):

=====================  ==============================================  =====================
name                   P(x | z) from decoder output                    data
=====================  ==============================================  =====================
bernoulli              Bernoulli(logits)                               binary 0/1
continuous-bernoulli   ContinuousBernoulli(logits) (Loaiza-Ganem and   grey levels in [0, 1]
                       Cunningham 2019: normalized, unlike BCE)
gaussian               Normal(f(z), sigma): sigma fixed, or learned    real values
                       (shared, per-pixel, or predicted per pixel)
laplace                Laplace(f(z), scale), same scale options        real values
beta                   Beta(a, b) on pixels squeezed into (eps, 1-eps) grey levels in [0, 1]
discretized-logistic   logistic CDF over the pixel's bin (exact        k / (levels - 1)
                       probability of a discrete grey level)
=====================  ==============================================  =====================
"""

from __future__ import annotations

from typing import Any

from pyro_vae.errors import UsageError
from pyro_vae.likelihoods.base import SCALE_MODES, Likelihood
from pyro_vae.likelihoods.discretized import DiscretizedLogistic, DiscretizedLogisticDistribution
from pyro_vae.likelihoods.locscale import Gaussian, Laplace
from pyro_vae.likelihoods.pixels import Bernoulli, Beta, ContinuousBernoulli

LIKELIHOODS: dict[str, type[Likelihood]] = {
    cls.name: cls
    for cls in (Bernoulli, ContinuousBernoulli, Gaussian, Laplace, Beta, DiscretizedLogistic)
}


def register_likelihood(cls: type[Likelihood]) -> type[Likelihood]:
    """Add a likelihood class to :data:`LIKELIHOODS` under its :attr:`~Likelihood.name`
    (usable as a class decorator), so that :func:`get_likelihood` and a run's stored
    configuration find it.

    Registering a class again replaces its entry: the same class object, or a new one
    of the same module and qualified name (a re-run notebook cell, a reloaded module).

    :raises UsageError: if the class is no :class:`Likelihood`, sets no ``name`` of its
        own, or its name belongs to another class (a built-in one included).
    """
    if not (isinstance(cls, type) and issubclass(cls, Likelihood)):
        raise UsageError(f"{cls!r} is not a subclass of pyro_vae.likelihoods.Likelihood")
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name:
        inherited = getattr(cls, "name", None)
        also = f" (it inherits {inherited!r}, which names its base class)" if inherited else ""
        raise UsageError(
            f"{cls.__name__} sets no name of its own{also}; give it a class attribute "
            'name = "..." naming it for get_likelihood and config()'
        )
    taken = LIKELIHOODS.get(name, cls)
    same = (taken.__module__, taken.__qualname__) == (cls.__module__, cls.__qualname__)
    if not same:
        raise UsageError(
            f"likelihood name {name!r} already belongs to {taken.__qualname__} (module "
            f"{taken.__module__}); cannot register {cls.__qualname__} (module "
            f"{cls.__module__}) under it: give it a name of its own"
        )
    LIKELIHOODS[name] = cls
    return cls


def get_likelihood(name: str, **kwargs: Any) -> Likelihood:
    """Build a likelihood by registry name.

    :param str name: one of :data:`LIKELIHOODS`.
    :param kwargs: constructor arguments (``sigma`` for ``gaussian``, ...).
    :raises UsageError: for an unknown name.
    """
    if name not in LIKELIHOODS:
        raise UsageError(
            f"unknown likelihood {name!r}; valid names: {', '.join(sorted(LIKELIHOODS))}"
        )
    return LIKELIHOODS[name](**kwargs)


__all__ = [
    "LIKELIHOODS",
    "SCALE_MODES",
    "Bernoulli",
    "Beta",
    "ContinuousBernoulli",
    "DiscretizedLogistic",
    "DiscretizedLogisticDistribution",
    "Gaussian",
    "Laplace",
    "Likelihood",
    "get_likelihood",
    "register_likelihood",
]
