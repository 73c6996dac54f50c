"""Likelihoods of pixels in [0, 1]: Bernoulli, continuous Bernoulli and Beta."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch.autograd.function import once_differentiable
from torch.distributions.transforms import AffineTransform
from torch.nn import functional as F

from pyro_vae.errors import UsageError
from pyro_vae.likelihoods.base import Likelihood, _split


class _PixelSum(torch.autograd.Function):
    """``sum_d x_d l_d - softplus(l_d)`` over the last dim, and its gradient
    ``x - sigmoid(l)``, each in few passes over the pixels.

    With ``softplus(l) = relu(l) + log(1 + exp(-|l|))`` and ``relu(l) = (l + |l|) / 2``
    the sum is ``(x - 1/2) . l - sum |l| / 2 - sum log(1 + exp(-|l|))``: one dot product
    and passes of ``exp`` and ``log``, which torch vectorizes (its ``softplus`` and
    ``log1p`` take several times longer per value on a CPU). ``1 + exp(-|l|)`` lies in
    ``(1, 2]``, so nothing overflows; where ``exp(-|l|)`` is below float precision the
    term it drops is below it too.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(logits, value)
        magnitude = logits.abs()
        out = torch.linalg.vecdot(value - 0.5, logits) - 0.5 * magnitude.sum(-1)
        return out - magnitude.neg_().exp_().add_(1.0).log_().sum(-1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        logits, value = ctx.saved_tensors
        out = torch.sigmoid(logits)
        return out.sub_(value).mul_(grad.unsqueeze(-1).neg()), None


class BernoulliPixels(dist.Independent):
    """``Bernoulli(logits=logits).to_event(1)``, with a faster ``log_prob``.

    ``log P(x|z) = sum_d x_d l_d - log(1 + exp(l_d))`` is summed over the pixels by
    :class:`_PixelSum`: a dot product and passes of ``exp`` and ``log``, with a
    hand-written gradient ``x - sigmoid(l)``. Pyro's ``Bernoulli.log_prob`` builds the
    same numbers as a negated element-wise binary cross-entropy and sums it afterwards,
    with more passes over every pixel forward and backward; on a 2-core CPU this takes a
    fifth off the evaluator's time at K = 5,000 (``docs/performance.md``). The values
    agree with Pyro's in float64 to 1e-9 and in float32 to the rounding of a float32 sum
    over the pixels, as Pyro's own do (both tested against float64). The gradient is
    once differentiable (no double backward). A ``value`` that needs a gradient itself,
    or whose shape is not the trailing part of the logits' shape, takes Pyro's path.

    :param logits: ``(..., D)`` log-odds; the last dimension is the event.
    """

    def __init__(self, logits: torch.Tensor, validate_args: bool | None = None) -> None:
        super().__init__(dist.Bernoulli(logits=logits, validate_args=validate_args), 1)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(BernoulliPixels, _instance)
        return super().expand(batch_shape, _instance=new)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        logits = self.base_dist.logits
        shape = value.shape
        if (
            value.requires_grad
            or value.dtype != logits.dtype
            or shape != logits.shape[logits.dim() - len(shape) :]
        ):
            return super().log_prob(value)
        if self._validate_args:
            self.base_dist._validate_sample(value)
        return _PixelSum.apply(logits, value)


class Bernoulli(Likelihood):
    """Independent Bernoulli pixels with ``logits`` from the decoder: for binary data.

    ``log P(x|z) = sum_d x_d log p_d + (1 - x_d) log(1 - p_d)``, ``p = sigmoid(logits)``.
    """

    name = "bernoulli"
    support = constraints.boolean

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        return BernoulliPixels(out)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out)


class ContinuousBernoulli(Likelihood):
    """Continuous Bernoulli pixels on ``[0, 1]`` with ``logits`` from the decoder.

    Binary cross-entropy on grey levels is not a log-density: it lacks the
    normalizing constant ``C(lambda)`` that makes ``C(lambda) lambda^x (1 - lambda)^(1 - x)``
    integrate to one over ``[0, 1]``. This likelihood includes it (Loaiza-Ganem and
    Cunningham, *The continuous Bernoulli: fixing a pervasive error in variational
    autoencoders*, NeurIPS 2019).
    """

    name = "continuous-bernoulli"
    support = constraints.unit_interval

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        return dist.ContinuousBernoulli(logits=out).to_event(1)


class Beta(Likelihood):
    """Independent Beta pixels with two positive decoder outputs per pixel.

    A Beta density is infinite or zero at exactly 0 and 1, where most MNIST pixels
    sit, so the data are squeezed: ``x' = eps + (1 - 2 eps) x`` with ``eps = 1e-3``
    by default, and the returned distribution is the Beta pushed back through that
    affine map. Its ``log_prob(x)`` is a proper density over ``x`` (it includes the
    ``log(1 - 2 eps)`` Jacobian term), comparable with the other densities.

    :param float eps: squeeze margin, in ``(0, 0.5)``.
    :param float min_concentration: lower bound on both concentrations.
    """

    name = "beta"
    #: the closed interval: 0 and 1 are squeezed into (eps, 1 - eps)
    support = constraints.unit_interval
    params_per_dim = 2

    def __init__(self, eps: float = 1e-3, min_concentration: float = 1e-2) -> None:
        super().__init__()
        if not 0 < eps < 0.5:
            raise UsageError(f"beta likelihood: eps must lie in (0, 0.5), got {eps}")
        self.eps = float(eps)
        self.min_concentration = float(min_concentration)

    def concentrations(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha, beta)`` per pixel, each ``softplus(raw) + min_concentration``."""
        a, b = _split(out, 2)
        return F.softplus(a) + self.min_concentration, F.softplus(b) + self.min_concentration

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        a, b = self.concentrations(out)
        width = 1 - 2 * self.eps
        unsqueeze = AffineTransform(loc=-self.eps / width, scale=1 / width)
        return dist.TransformedDistribution(dist.Beta(a, b), [unsqueeze]).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        a, b = self.concentrations(out)
        return (a / (a + b) - self.eps) / (1 - 2 * self.eps)
