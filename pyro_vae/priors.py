"""Prior families P(z): values a model takes, as it takes a likelihood and a guide family.

Doersch (section 2.1) keeps P(z) = N(0, I) and lets the decoder map it to whatever the
data need; a learned prior closes the "holes" between the prior and the aggregate
posterior that make prior samples blurry (Tomczak and Welling, *VAE with a VampPrior*,
AISTATS 2018). Each family is an :class:`torch.nn.Module` (its learned parameters are
trained with the networks) whose :meth:`PriorFamily.distribution` is a Pyro
distribution with event shape ``(z_dim,)``, so training, importance sampling and the
evaluators take its log density from the distribution and need nothing else:

=========  ====================================================================
name       P(z)
=========  ====================================================================
standard   N(0, I), the tutorial's (no parameters)
mixture    sum_k pi_k N(mu_k, diag(sigma_k^2)), weights, means, scales learned
vamp       (1/K) sum_k Q(z | u_k), the guide at K learned pseudo-inputs u_k
flow       N(0, I) pushed through learned invertible affine coupling layers
=========  ====================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import nn

from pyro_vae.diagnostics import mixture_usage, perplexity
from pyro_vae.errors import UsageError


class PriorFamily(nn.Module):
    """Base class: ``P(z)`` with event shape ``(z_dim,)``.

    Subclasses set :attr:`name`, create their parameters in :meth:`setup` and return
    the distribution from :meth:`distribution`; :meth:`config` stores their constructor
    arguments.
    """

    #: registry name (``--prior``)
    name: ClassVar[str]

    def setup(self, z_dim: int, x_dim: int) -> None:
        """Create the parameters for latents of ``z_dim`` (and data of ``x_dim``)."""
        self.z_dim = int(z_dim)

    def distribution(self, encode: Callable | None = None) -> dist.TorchDistribution:
        """``P(z)``, batch shape ``()`` and event shape ``(z_dim,)``.

        :param encode: the guide as a function of data, ``x -> Q(z|x)`` with batch shape
            ``(len(x),)``: the VampPrior needs it, the others ignore it.
        """
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this prior via :func:`get_prior`."""
        return {"name": self.name}

    def describe(self) -> str:
        """How reports name it: ``"mixture prior (components=10)"``."""
        settings = ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "name")
        return f"{self.name} prior" + (f" ({settings})" if settings else "")


class StandardNormal(PriorFamily):
    """``N(0, I)``: the tutorial's prior, with no parameters and nothing in a checkpoint
    (its location and scale are buffers that are not saved, so the checkpoints of runs
    made before priors were values load as they are)."""

    name = "standard"

    def setup(self, z_dim: int, x_dim: int) -> None:
        super().setup(z_dim, x_dim)
        self.register_buffer("loc", torch.zeros(self.z_dim), persistent=False)
        self.register_buffer("scale", torch.ones(self.z_dim), persistent=False)

    def distribution(self, encode=None) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


def _check_components(components: int) -> int:
    if isinstance(components, bool) or not isinstance(components, int) or components < 1:
        raise UsageError(
            f"{{prior_components}} must be an integer of at least 1, got {components!r}",
            settings=("prior_components",),
        )
    return components


class MixturePrior(PriorFamily):
    """A mixture of ``components`` diagonal Gaussians whose weights, means and scales are
    learned. The means start as draws from ``N(0, I)``, so the components start apart.

    :param int components: the number of Gaussians.
    """

    name = "mixture"

    def __init__(self, components: int = 10) -> None:
        super().__init__()
        self.components = _check_components(components)

    def setup(self, z_dim: int, x_dim: int) -> None:
        super().setup(z_dim, x_dim)
        k = self.components
        self.logits = nn.Parameter(torch.zeros(k))
        self.locs = nn.Parameter(torch.randn(k, self.z_dim))
        self.log_scales = nn.Parameter(torch.zeros(k, self.z_dim))

    def distribution(self, encode=None) -> dist.TorchDistribution:
        gaussians = dist.Normal(self.locs, self.log_scales.exp()).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), gaussians)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "components": self.components}


class VampPrior(PriorFamily):
    """The VampPrior: the equally weighted mixture of the guide at ``components`` learned
    pseudo-inputs, ``(1/K) sum_k Q(z | u_k)`` (Tomczak and Welling 2018).

    :param int components: the number of pseudo-inputs.
    :param str init: ``"random"``: pseudo-inputs drawn uniformly in [0, 1] (the paper's
        default); ``"data"``: set from training points with :meth:`initialize`.
    """

    name = "vamp"
    INITS = ("random", "data")

    def __init__(self, components: int = 50, init: str = "random") -> None:
        super().__init__()
        self.components = _check_components(components)
        if init not in self.INITS:
            raise UsageError(f"unknown pseudo-input init {init!r}; valid: {', '.join(self.INITS)}")
        self.init = init

    def setup(self, z_dim: int, x_dim: int) -> None:
        super().setup(z_dim, x_dim)
        self.pseudo_inputs = nn.Parameter(torch.rand(self.components, int(x_dim)))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Set the pseudo-inputs to ``components`` points of ``x`` drawn without
        replacement (``init="data"``), plus a little noise so that no two coincide."""
        pick = torch.randperm(len(x), generator=generator)[: self.components]
        chosen = x[pick.to(x.device)].to(self.pseudo_inputs)
        noise = 0.01 * torch.randn(chosen.shape, generator=generator).to(chosen)
        self.pseudo_inputs.copy_((chosen + noise).clamp(0, 1))

    def distribution(self, encode=None) -> dist.TorchDistribution:
        if encode is None:
            raise UsageError("the VampPrior is the guide at its pseudo-inputs: pass encode")
        weights = torch.zeros(self.components, device=self.pseudo_inputs.device)
        return dist.MixtureSameFamily(dist.Categorical(logits=weights), encode(self.pseudo_inputs))

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "components": self.components, "init": self.init}


class FlowPrior(PriorFamily):
    """``N(0, I)`` pushed through ``steps`` learned affine coupling layers (Dinh et al.,
    *Density estimation using Real NVP*, 2017), each followed by a fixed permutation of
    the coordinates so that every coordinate is transformed. Coupling layers invert in
    one pass, so the log density of a guide's sample costs as much as a draw.

    :param int steps: coupling layers.
    :param int hidden: width of each layer's network.
    """

    name = "flow"

    def __init__(self, steps: int = 4, hidden: int = 64) -> None:
        super().__init__()
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise UsageError(
                f"{{prior_flow_steps}} must be an integer of at least 1, got {steps!r}",
                settings=("prior_flow_steps",),
            )
        self.steps = steps
        self.hidden = int(hidden)

    def setup(self, z_dim: int, x_dim: int) -> None:
        super().setup(z_dim, x_dim)
        if self.z_dim < 2:
            raise UsageError(
                "a flow prior couples two halves of z, so it needs {z_dim} of at least 2",
                settings=("z_dim",),
            )
        self.register_buffer("loc", torch.zeros(self.z_dim), persistent=False)
        self.register_buffer("scale", torch.ones(self.z_dim), persistent=False)
        self.couplings = nn.ModuleList(
            T.affine_coupling(self.z_dim, hidden_dims=[self.hidden]) for _ in range(self.steps)
        )
        # a permutation after each coupling, fixed and saved with the model
        generator = torch.Generator().manual_seed(0)
        orders = [torch.randperm(self.z_dim, generator=generator) for _ in range(self.steps)]
        self.register_buffer("orders", torch.stack(orders))

    def distribution(self, encode=None) -> dist.TorchDistribution:
        base = dist.Normal(self.loc, self.scale).to_event(1)
        transforms: list = []
        for coupling, order in zip(self.couplings, self.orders, strict=True):
            transforms += [coupling, T.Permute(order)]
        return dist.TransformedDistribution(base, transforms)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "steps": self.steps, "hidden": self.hidden}


def draw(
    prior: dist.TorchDistribution,
    num_samples: int,
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """``num_samples`` draws from ``prior`` that depend only on ``generator``: Pyro's
    distributions draw from the global stream, so the draw runs on a stream of its own
    seeded from ``generator``, and the caller's global stream is left as it was.

    :returns: ``(num_samples, z_dim)``.
    """
    where = generator.device if generator is not None else None
    seed = int(torch.randint(2**62, (1,), generator=generator, device=where))
    device = torch.device(device) if device is not None else torch.device("cpu")
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return prior.sample((num_samples,))


@torch.no_grad()
def learned(prior: dist.TorchDistribution, z: torch.Tensor) -> dict[str, Any]:
    """What a mixture prior learned, for a run's results: the mixture weights, the share
    of the aggregate posterior each component explains at ``z`` (draws from the guide at
    the test data, :func:`~pyro_vae.diagnostics.mixture_usage`) and the components in
    use, the perplexity of that share (K when all explain alike, 1 when one explains
    everything). Empty for a prior without components.
    """
    usage = mixture_usage(prior, z)
    if usage is None:
        return {}
    return {
        "prior_components_in_use": perplexity(usage),
        "prior_weights": prior.mixture_distribution.probs.tolist(),
        "prior_usage": usage.tolist(),
    }


PRIORS: dict[str, type[PriorFamily]] = {
    cls.name: cls for cls in (StandardNormal, MixturePrior, VampPrior, FlowPrior)
}


def get_prior(name: str | PriorFamily = "standard", **kwargs: Any) -> PriorFamily:
    """A prior family by name (or the family itself).

    :raises UsageError: for an unknown name.
    """
    if isinstance(name, PriorFamily):
        return name
    if name not in PRIORS:
        raise UsageError(
            f"unknown {{prior}} {name!r}; valid names: {', '.join(PRIORS)}", settings=("prior",)
        )
    return PRIORS[name](**kwargs)


__all__ = [
    "PRIORS",
    "FlowPrior",
    "MixturePrior",
    "PriorFamily",
    "StandardNormal",
    "VampPrior",
    "draw",
    "get_prior",
    "learned",
]
