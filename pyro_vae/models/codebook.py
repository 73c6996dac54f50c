"""The VQ-VAE's codebook: a distribution over arrays of codebook vectors, and the
module that holds the codebook and chooses codes.

:class:`Codebook` is the latent site ``"z"`` of :class:`~pyro_vae.models.vqvae.VQVAE`
(prior and guide alike), with an enumerable support so that Pyro can sum it out;
:class:`Quantizer` scores encoder outputs against the codes and, optionally, moves the
codes by moving averages (van den Oord et al. 2017, appendix A.1).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pyro.distributions.torch_distribution import TorchDistribution
from torch import nn
from torch.distributions import constraints
from torch.nn import functional as F

from pyro_vae import distributed
from pyro_vae.memory import check_fits


class Codebook(TorchDistribution):
    """``m`` slots, each independently one of the ``k`` rows of ``codebook`` with
    probabilities ``softmax(logits)``: a discrete distribution over ``(m, D)`` arrays of
    codebook vectors.

    :meth:`log_prob` reads each slot of a value as its nearest codebook row (with
    ``validate_args``, a value off the codebook is an error). :meth:`enumerate_support` lists all
    ``k^m`` arrays, so Pyro can sum the site out (``infer={"enumerate": "parallel"}``).

    :param codebook: ``(k, D)``.
    :param logits: ``(..., m, k)``; the batch shape is ``logits.shape[:-2]``.
    """

    arg_constraints: ClassVar[dict] = {}
    support = constraints.independent(constraints.real, 2)
    has_enumerate_support = True

    def __init__(
        self, codebook: torch.Tensor, logits: torch.Tensor, validate_args: bool | None = None
    ):
        self.codebook = codebook
        self.logits = logits - logits.logsumexp(-1, keepdim=True)
        slots, codes = logits.shape[-2:]
        if codes != codebook.shape[0]:
            raise ValueError(f"logits over {codes} codes for a codebook of {codebook.shape[0]}")
        super().__init__(
            logits.shape[:-2], torch.Size((slots, codebook.shape[1])), validate_args=validate_args
        )

    def expand(self, batch_shape, _instance=None) -> Codebook:
        """The same codebook with the logits broadcast to ``batch_shape``."""
        shape = torch.Size(batch_shape) + self.logits.shape[-2:]
        return Codebook(self.codebook, self.logits.expand(shape), self._validate_args)

    def sample(self, sample_shape=()) -> torch.Tensor:
        """Codes drawn slot by slot: ``sample_shape + batch_shape + (m, D)``."""
        with torch.no_grad():
            idx = torch.distributions.Categorical(logits=self.logits).sample(
                torch.Size(sample_shape)
            )
            return self.codebook[idx]

    def indices(self, value: torch.Tensor) -> torch.Tensor:
        """The nearest codebook row of every slot of ``value``: ``(..., m)``.

        :raises ValueError: with argument validation on, for a value whose slots are
            not codebook rows (to float precision).
        """
        v = self.codebook
        distance = (v * v).sum(-1) - 2 * value @ v.T  # + ||value||^2, equal for all rows
        idx = distance.argmin(-1)
        if self._validate_args:
            error = (value - v[idx]).abs().amax()
            if not error <= 1e-5 * (1 + v.abs().amax()):  # NaN fails too
                raise ValueError(f"a value is {float(error):.3g} away from every codebook row")
        return idx

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``sum over slots of log softmax(logits)[code]``, each slot read as its nearest
        codebook row."""
        idx = self.indices(value)
        shape = torch.broadcast_shapes(idx.shape, self.logits.shape[:-1])
        logits = self.logits.expand(shape + self.logits.shape[-1:])
        return logits.gather(-1, idx.expand(shape).unsqueeze(-1)).squeeze(-1).sum(-1)

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        """All ``k^m`` code arrays: ``(k^m,) + (1,) * len(batch_shape) + (m, D)``, or
        with the batch shape when ``expand``."""
        codes, slots = self.codebook.shape[0], self.event_shape[0]
        grid = torch.arange(codes, device=self.codebook.device)
        combos = torch.cartesian_prod(*[grid] * slots).reshape(-1, slots)  # (k^m, m)
        values = self.codebook[combos]
        values = values.reshape((len(combos),) + (1,) * len(self.batch_shape) + self.event_shape)
        if expand:
            values = values.expand((len(combos), *self.batch_shape, *self.event_shape))
        return values


class Quantizer(nn.Module):
    """The codebook and its use: choosing codes, scoring them, and the moving-average
    update.

    :param int codes: k.
    :param int code_dim: D.
    :param str select: ``"dot"`` (largest dot product) or ``"distance"`` (nearest).
    :param float ema_decay: the codebook follows moving averages of the encoder outputs
        assigned to each code with this decay (then it is a buffer, not a parameter);
        ``None`` learns it by gradient.
    """

    def __init__(
        self, codes: int, code_dim: int, select: str = "dot", ema_decay: float | None = None
    ) -> None:
        super().__init__()
        check_fits(
            codes * code_dim * (1 if ema_decay is None else 2) + codes,
            f"the codebook of {codes} codes of {code_dim} numbers",
            "use fewer or shorter codes",
        )
        self.select_rule = select
        self.ema_decay = ema_decay
        # small codes, as in van den Oord et al.: the encoder's first outputs are larger,
        # and the codes that get chosen move out to them
        codebook = torch.empty(codes, code_dim).uniform_(-1 / codes, 1 / codes)
        if ema_decay is None:
            self.codebook = nn.Parameter(codebook)
        else:
            self.register_buffer("codebook", codebook)
            self.register_buffer("ema_counts", torch.ones(codes))
            self.register_buffer("ema_sums", codebook.clone())

    def scores(self, e: torch.Tensor) -> torch.Tensor:
        """``(..., m, D)`` encoder outputs -> ``(..., m, k)`` scores, the larger the better:
        dot products, or negative squared distances."""
        v = self.codebook
        dots = e @ v.T
        if self.select_rule == "dot":
            return dots
        return 2 * dots - (v * v).sum(-1) - (e * e).sum(-1, keepdim=True)

    def select(self, e: torch.Tensor) -> torch.Tensor:
        """The chosen code of every slot, ``(..., m)``."""
        return self.scores(e).argmax(-1)

    @torch.no_grad()
    def ema_update(self, e: torch.Tensor, idx: torch.Tensor, eps: float = 1e-5) -> None:
        """Move each code towards the mean of the outputs assigned to it (summed over
        the processes of a data-parallel run, so every process keeps the same codebook)."""
        one_hot = F.one_hot(idx, self.codebook.shape[0]).type_as(e).flatten(0, -2)
        counts = one_hot.sum(0)
        sums = one_hot.T @ e.reshape(-1, e.shape[-1])
        if distributed.active():
            counts, sums = distributed.all_sum(counts), distributed.all_sum(sums)
        decay = self.ema_decay
        self.ema_counts.mul_(decay).add_(counts, alpha=1 - decay)
        self.ema_sums.mul_(decay).add_(sums, alpha=1 - decay)
        total = self.ema_counts.sum()
        smoothed = (self.ema_counts + eps) / (total + len(counts) * eps) * total
        self.codebook.copy_(self.ema_sums / smoothed.unsqueeze(-1))
