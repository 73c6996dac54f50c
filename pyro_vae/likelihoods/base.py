"""The base class of every likelihood, and helpers its subclasses share."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import pyro.distributions as dist
import torch
from pyro.distributions.constraints import Constraint
from torch import nn

from pyro_vae.errors import UsageError
from pyro_vae.likelihoods.support import describe, inside, is_binary, outside

SCALE_MODES = ("shared", "per-pixel", "predicted")


class _FromSupport:
    """A read-only attribute that follows from the support (of the instance where there
    is one, else of the class); a subclass may still declare its own value."""

    def __init__(self, derive: Callable[[Any], bool]) -> None:
        self.derive = derive
        self.__doc__ = derive.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> bool:
        support = getattr(obj if obj is not None else owner, "support", None)
        return isinstance(support, Constraint) and self.derive(support)

    def __set__(self, obj: Any, value: Any) -> None:
        raise AttributeError(
            f"{self.name} follows from the likelihood's support; declare the support instead"
        )


class Likelihood(nn.Module):
    """Base class: map decoder output of shape ``(..., x_dim * params_per_dim)``
    to a distribution with ``event_shape == (x_dim,)``.

    Subclasses set :attr:`name` and :attr:`support` and implement :meth:`forward`;
    :meth:`mean`, :meth:`check_data` and :meth:`config` have defaults to override.
    :meth:`config` stores every constructor argument, read from the attribute of the
    same name, so that :func:`~pyro_vae.likelihoods.get_likelihood` rebuilds the
    likelihood from it.
    """

    #: registry name, as used by ``--likelihood``
    name: ClassVar[str]
    #: the values the data may take, a constraint of :mod:`pyro.distributions.constraints`
    #: (``constraints.boolean``, ``constraints.unit_interval``, ``constraints.real``, ...):
    #: :meth:`check_data` refuses data outside it
    support: ClassVar[Constraint]
    #: True when ``log_prob`` is a log-probability of discrete values, not a density;
    #: by default, whether the support is discrete
    discrete = _FromSupport(lambda support: bool(support.is_discrete))
    #: True when the data must be 0 or 1 (the support is ``constraints.boolean`` or
    #: ``constraints.integer_interval(0, 1)``): training binarizes grey levels by default
    binary = _FromSupport(is_binary)
    #: decoder outputs needed per data dimension
    params_per_dim: int = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _check_declarations(cls)

    @property
    def support_text(self) -> str:
        """The support in words, for messages (``"values in [0, 1]"``)."""
        return describe(self.support)

    def setup(self, x_dim: int) -> None:
        """Called once by the model with the data dimension (creates per-pixel parameters)."""

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        """:param out: decoder output, shape ``(..., x_dim * params_per_dim)``.
        :returns: a distribution over ``x`` with one event dimension."""
        raise NotImplementedError

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        """Mean of ``P(x|z)`` for decoder output ``out``, for pictures and reconstructions.

        :returns: tensor of shape ``(..., x_dim)``.
        """
        return self(out).mean

    def check_data(self, x: torch.Tensor, what: str = "data") -> None:
        """Raise :class:`~pyro_vae.errors.UsageError` if ``x`` holds non-finite values or
        values outside :attr:`support`, or if a density (a likelihood that is not
        :attr:`discrete`) meets data of only 0s and 1s, such as binarized images.

        :param x: data of shape ``(N, x_dim)``.
        :param str what: how to name the data in the message.
        """
        if not bool(torch.isfinite(x).all()):
            self._reject(x, what, "NaN or infinite values", "remove or impute them")
        count = int((~inside(self.support, x)).sum().item())
        if count:
            problem, fix, settings = outside(self.support, count)
            self._reject(x, what, problem, fix, settings)
        if not self.discrete and x.numel() and bool(((x == 0) | (x == 1)).all()):
            raise UsageError(
                f"the {self.name} likelihood is a density of continuous values, but {what} "
                "holds only 0s and 1s (binarized data): on two values a density grows "
                "without bound, and its log-likelihood is no probability of the data. Use "
                "{likelihood} bernoulli for binary data, or train on the grey levels "
                "({binarize} none)",
                settings=("likelihood", "binarize"),
            )

    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this likelihood via :func:`get_likelihood`:
        ``{"name": name}`` and every argument of the constructor, read from the attribute
        of the same name.

        :raises TypeError: for an argument the likelihood keeps in no attribute of its
            name (a subclass that keeps it otherwise overrides this method).
        """
        out: dict[str, Any] = {"name": self.name}
        for argument in constructor_arguments(type(self)):
            if argument == "name":
                raise TypeError(
                    f"{type(self).__name__}.__init__ takes an argument called name, which "
                    "config() stores as the registry name; rename the argument"
                )
            try:
                out[argument] = getattr(self, argument)
            except AttributeError:
                raise TypeError(
                    f"{type(self).__name__}.__init__ takes {argument}, but keeps no attribute "
                    f"{argument}: config() reads every constructor argument from the "
                    f"attribute of its name, so set self.{argument} = {argument} in __init__ "
                    "(or override config())"
                ) from None
        return out

    def extra_repr(self) -> str:
        try:
            config = self.config()
        except TypeError:  # a definition config() refuses still prints
            return ""
        return ", ".join(f"{k}={v}" for k, v in config.items() if k != "name")

    def _reject(
        self, x: torch.Tensor, what: str, problem: str, fix: str, settings: tuple[str, ...] = ()
    ) -> None:
        finite = x[torch.isfinite(x)]
        observed = (
            f"[{finite.min().item():.4g}, {finite.max().item():.4g}]"
            if finite.numel()
            else "none finite"
        )
        raise UsageError(
            f"the {self.name} likelihood needs {self.support_text}, but {what} has {problem} "
            f"(observed range {observed}). {fix}",
            settings=settings,
        )


def constructor_arguments(cls: type) -> list[str]:
    """The named arguments of a likelihood class's constructor, ``self`` excluded,
    following ``**kwargs`` passed on to the parent class."""
    found: list[str] = []
    for klass in cls.__mro__:
        if klass is Likelihood or not issubclass(klass, Likelihood):
            break
        if "__init__" not in klass.__dict__:
            continue
        parameters = list(inspect.signature(klass.__init__).parameters.values())[1:]
        found += [
            p.name
            for p in parameters
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in found
        ]
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return found


def _check_declarations(cls: type[Likelihood]) -> None:
    """Refuse, when the class is created, a support that is no constraint, a concrete
    likelihood (one with a :attr:`~Likelihood.name`) without a support, and a ``binary``
    flag that contradicts the support."""
    where = f"likelihood {cls.__name__}"
    declared = cls.__dict__.get("support", getattr(cls, "support", None))
    if isinstance(declared, str):
        raise TypeError(
            f"{where}: support is the text {declared!r}; declare a constraint of "
            "pyro.distributions.constraints instead (constraints.boolean for binary data, "
            "constraints.unit_interval for values in [0, 1], constraints.real, ...): the "
            "data are checked against it, and messages describe it in words"
        )
    if declared is None and isinstance(getattr(cls, "name", None), str):
        flag = cls.__dict__.get("binary")
        raise TypeError(
            f"{where} declares no support: set support to the constraint of "
            "pyro.distributions.constraints that the data satisfy (constraints.boolean for "
            "binary data, constraints.unit_interval for values in [0, 1], constraints.real, "
            "...), so that data outside it are refused before training"
            + ("; binary = True is support = constraints.boolean" if flag else "")
        )
    if declared is not None and not isinstance(declared, (Constraint, property)):
        raise TypeError(
            f"{where}: support must be a constraint of pyro.distributions.constraints, got "
            f"{type(declared).__name__}"
        )
    if "binary" in cls.__dict__:
        flag = cls.__dict__["binary"]
        delattr(cls, "binary")  # binary follows from the support
        if isinstance(declared, Constraint) and bool(flag) != cls.binary:
            raise TypeError(
                f"{where}: binary = {flag!r} contradicts its support {declared}; binary "
                "follows from the support (constraints.boolean means binary data), so "
                "declare the support alone"
            )


def _split(out: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
    """``(..., D * parts)`` -> ``parts`` tensors of shape ``(..., D)``."""
    return tuple(out.unflatten(-1, (parts, -1)).unbind(-2))
