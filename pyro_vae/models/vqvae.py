"""VQ-VAE as the notes on Doersch's tutorial describe it (section 6), as a Pyro model and guide.

The latent ``z`` is a sequence of ``m`` vectors (slots), each one of the ``k`` rows of a
learned codebook ``V``. The notes' three assumptions, with ``m = 1``:

1. ``q(z|x)`` puts probability 1 on the code with the largest dot product with the
   encoder output ``Enc(x)``, 0 on the others;
2. ``p(z)`` is uniform over the ``k`` codes;
3. ``p(x|z) = N(Dec(V[z]), I)``.

So ``KL(q || p) = log k`` (``m log k`` for ``m`` independent slots), a constant, and the
ELBO is ``log p(x | V[z]) - m log k``: maximizing it minimizes the squared error between
``x`` and ``Dec(V[z])``. Choosing a code blocks the gradient, so the gradient at the
decoder's input is copied to the encoder's output (straight-through).

In Pyro: the latent site ``"z"`` holds the chosen vectors, shape ``(m, D)`` per data
point. The model's prior is :class:`Codebook` (uniform logits), a discrete distribution
over codebook vectors that Pyro can enumerate; the guide is a ``Delta`` at
``sg[V[idx]] + e - sg[e]``, whose value is exactly the chosen code and whose gradient
is the identity to the encoder output ``e`` and zero to the codebook (``log q = 0``).
Any likelihood of the library can replace the notes' unit-variance Gaussian.

The notes stop there, and with only this the codebook never learns: the straight-through
value carries no gradient to ``V`` (the prior's log-density is constant in ``V``). The
training terms of van den Oord et al. (2017) supply one: ``||sg[e] - V[idx]||^2`` moves the
chosen codes towards the encoder outputs, and ``beta ||e - sg[V[idx]]||^2`` (``beta`` =
``commitment``, 0.25) keeps the outputs near their codes; or the codes are moving averages
of the outputs assigned to them (``ema_decay``), with the commitment term alone. The
terms are added to the loss through a ``pyro.factor`` in the guide while the model
trains (a guide factor enters ``log q``, so the loss grows by it) and are absent when it
is evaluated, so every evaluation scores the notes' ELBO.

``log P(X) = logsumexp_z [log p(x|V[z])] - m log k`` is a sum over ``k^m`` code choices:
:meth:`VQVAE.exact_log_likelihood` computes it with Pyro's parallel enumeration of the
site ``"z"`` (practical for ``m = 1``); for larger ``m`` the evaluator importance-samples
it with :meth:`VQVAE.proposal`, a softmax over the selection scores at a temperature,
which gives every code choice a positive probability (the one-hot guide would make every
importance weight equal and return the ELBO).

References:

- A. van den Oord, O. Vinyals, K. Kavukcuoglu. Neural Discrete Representation Learning.
  NeurIPS 2017.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from pyro_vae.errors import UsageError
from pyro_vae.likelihoods import Gaussian, Likelihood
from pyro_vae.limits import MAX_COMMITMENT, in_range
from pyro_vae.models.base import Model, Option
from pyro_vae.models.codebook import Codebook, Quantizer
from pyro_vae.models.options import (
    HIDDEN_DIMS,
    LIKELIHOOD,
    NETWORK,
    SIGMA,
    architecture,
    check_sizes,
    likelihood_from_options,
)
from pyro_vae.models.vae import VAE
from pyro_vae.parsing import between, open_unit, size

#: ``--vq-select`` choices: the notes' largest dot product, the paper's nearest code
SELECTIONS = ("dot", "distance")
#: the most code combinations ``k^m`` that :meth:`VQVAE.exact_log_likelihood` enumerates
MAX_ENUMERATION = 4096
#: the ``--sigma`` of the VQ-VAE when it is not given: the notes' unit variance
VQ_SIGMA = 1.0


CODES = Option(
    "--vq-codes", "k, the codebook size of the VQ-VAE", default=64, type=size, argument="codes"
)
SLOTS = Option(
    "--vq-slots",
    "m, the code vectors per data point (the KL term is m log k)",
    default=1,
    type=size,
    argument="slots",
)
CODE_DIM = Option(
    "--vq-dim", "D, the length of each code vector", default=16, type=size, argument="code_dim"
)
SELECT = Option(
    "--vq-select",
    "how the guide picks a code: the largest dot product with the encoder output (dot, "
    "the notes) or the nearest code (distance, van den Oord et al.)",
    default="dot",
    choices=SELECTIONS,
    argument="select",
)


COMMITMENT = Option(
    "--vq-commitment",
    "beta, the weight of the commitment term ||e - sg[V[z]]||^2 in the training loss",
    default=0.25,
    type=between(0, MAX_COMMITMENT),
    argument="commitment",
)
EMA = Option(
    "--vq-ema",
    "learn the codebook as moving averages of the encoder outputs with this decay (e.g. "
    "0.99) instead of by its gradient term",
    type=open_unit,
    argument="ema_decay",
)
VQ_LIKELIHOOD = Option(
    LIKELIHOOD.flag,
    LIKELIHOOD.help,
    default="gaussian",
    choices=LIKELIHOOD.choices,
    stored=LIKELIHOOD.stored,
)


class VQVAE(Model):
    """VQ-VAE (van den Oord et al. 2017) as the notes derive it from the ELBO.

    :param int x_dim: data dimension.
    :param int codes: k, the codebook size (at least 2).
    :param int slots: m, code vectors per data point; 1 is the notes' model.
    :param int code_dim: D, the length of a code vector.
    :param hidden_dims: hidden widths of the encoder; the decoder mirrors them.
    :param likelihood: ``p(x|z)``; by default the notes' ``N(Dec(V[z]), I)``.
    :param image_shape: ``(height, width)`` for pictures.
    :param str select: ``"dot"`` (the notes) or ``"distance"`` (the paper).
    :param float commitment: beta, the weight of the commitment term.
    :param float codebook_weight: the weight of the codebook term ``||sg[e] - V||^2``;
        0 with ``commitment=0`` trains the notes' ELBO alone, whose codebook never moves.
        Unused with ``ema_decay``.
    :param float ema_decay: learn the codebook by moving averages with this decay;
        ``None``: by the codebook term's gradient.
    :param float temperature: of :meth:`proposal`, the evaluator's proposal.
    :param str network: ``"mlp"`` or ``"conv"``, as for :class:`~pyro_vae.VAE`.
    :param str name: prefix in Pyro's param store.
    """

    kind = "vqvae"
    summary = "VQ-VAE: z is m of k codebook vectors under a uniform prior (the notes, section 6)"
    options = (
        CODES,
        SLOTS,
        CODE_DIM,
        SELECT,
        COMMITMENT,
        EMA,
        HIDDEN_DIMS,
        VQ_LIKELIHOOD,
        SIGMA,
        NETWORK,
    )
    hints: ClassVar[dict[str, str]] = VAE.hints
    proposal_note = (
        "r(z|X): every slot of z drawn from a softmax of the selection scores at a "
        "temperature, since the one-hot guide Q(z|X) would make every weight equal; the "
        "ELBO, L_k and the gap above are those of r. The ELBO of Q is minus the negative "
        "ELBO above (log P(X) - that ELBO is D[Q || P(z|X)])"
    )

    def __init__(
        self,
        x_dim: int,
        codes: int = 64,
        slots: int = 1,
        code_dim: int = 16,
        hidden_dims: Sequence[int] = (400,),
        likelihood: Likelihood | None = None,
        image_shape: Sequence[int] | None = None,
        select: str = "dot",
        commitment: float = 0.25,
        codebook_weight: float = 1.0,
        ema_decay: float | None = None,
        temperature: float = 1.0,
        network: str = "mlp",
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        if codes < 2:
            raise UsageError(
                f"a codebook needs at least 2 codes (with one, z carries nothing), got {codes}"
            )
        sizes = {"codes": codes, "slots": slots, "code_dim": code_dim, "hidden_dims": hidden_dims}
        check_sizes("VQVAE", x_dim=x_dim, **sizes)
        if select not in SELECTIONS:
            raise UsageError(f"unknown selection {select!r}; valid: {', '.join(SELECTIONS)}")
        for weight in (commitment, codebook_weight):
            if not in_range(weight, 0, MAX_COMMITMENT):
                raise UsageError(
                    f"the commitment and codebook weights must be finite numbers in [0, "
                    f"{MAX_COMMITMENT:g}], got {commitment} and {codebook_weight}"
                )
        unit = ema_decay is None or (in_range(ema_decay, 0, 1, open_low=True) and ema_decay < 1)
        if not unit:
            raise UsageError(f"the moving-average decay must be in (0, 1), got {ema_decay}")
        if not (math.isfinite(temperature) and temperature > 0):
            raise UsageError(f"the proposal's temperature must be > 0, got {temperature}")
        self.x_dim, self.codes, self.slots, self.code_dim = (
            int(x_dim),
            int(codes),
            int(slots),
            int(code_dim),
        )
        self.hidden_dims = tuple(int(h) for h in hidden_dims)
        self.likelihood = likelihood if likelihood is not None else Gaussian(sigma=VQ_SIGMA)
        self.likelihood.setup(self.x_dim)
        self._image_shape = tuple(image_shape) if image_shape is not None else None
        self.commitment = float(commitment)
        self.codebook_weight = float(codebook_weight)
        self.temperature = float(temperature)
        self.network = network
        networks = architecture(network, self.hidden_dims, self._image_shape)
        self.encoder = networks.encoder(self.x_dim, self.slots * self.code_dim)
        self.quantizer = Quantizer(self.codes, self.code_dim, select, ema_decay)
        self.decoder = networks.decoder(
            self.slots * self.code_dim, self.x_dim * self.likelihood.params_per_dim
        )

    @classmethod
    def from_options(cls, options: dict[str, Any], dataset) -> VQVAE:
        """The VQ-VAE of ``pyro-vae train --model vqvae`` for ``dataset``."""
        return cls(
            dataset.x_dim,
            codes=options["vq_codes"],
            slots=options["vq_slots"],
            code_dim=options["vq_dim"],
            hidden_dims=options["hidden_dims"],
            likelihood=likelihood_from_options(options, dataset, default_sigma=VQ_SIGMA),
            image_shape=dataset.image_shape,
            select=options["vq_select"],
            commitment=options["vq_commitment"],
            ema_decay=options.get("vq_ema"),
            network=options.get("network", "mlp"),
        )

    def describe(self) -> str:
        """``"VQ-VAE (k 64, m 1)"``."""
        return f"VQ-VAE (k {self.codes}, m {self.slots})"

    @property
    def data_dims(self) -> tuple[int]:
        """``(x_dim,)``."""
        return (self.x_dim,)

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """``(height, width)`` of the images, or ``None``."""
        return self._image_shape

    @property
    def kl(self) -> float:
        """``KL(q || p) = m log k``, the same for every data point."""
        return self.slots * math.log(self.codes)

    # -- Pyro -------------------------------------------------------------------------

    def prior(self, batch_shape: Sequence[int]) -> Codebook:
        """``p(z)``: every slot uniform over the codes."""
        codebook = self.quantizer.codebook
        logits = codebook.new_zeros(self.slots, self.codes)
        return Codebook(codebook, logits).expand(torch.Size(batch_shape))

    def model(self, x: torch.Tensor) -> None:
        """``p(z) p(x|z)``: ``z`` uniform over the code arrays, ``x ~ likelihood(Dec(z))``.

        :param x: ``(batch, x_dim)``.
        """
        self.pyro_module("decoder", self.decoder)
        self.pyro_module("codebook", self.quantizer)
        self.pyro_likelihood()
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", self.prior((x.shape[0],)))  # (..., batch, m, D)
            pyro.sample("x", self.likelihood(self.decoder(z.flatten(-2))), obs=x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder outputs ``e``: ``(..., m, D)``."""
        return self.encoder(x).unflatten(-1, (self.slots, self.code_dim))

    def guide(self, x: torch.Tensor) -> None:
        """``q(z|x)``: probability 1 on the selected codes, with the straight-through
        gradient; while training, also the codebook and commitment terms.

        :param x: ``(batch, x_dim)``.
        """
        self.pyro_module("encoder", self.encoder)
        self.pyro_module("codebook", self.quantizer)
        with pyro.plate("data", x.shape[0], dim=-1):
            e = self.encode(x)
            idx = self.quantizer.select(e)
            training = self.training and torch.is_grad_enabled()
            if training and self.quantizer.ema_decay is not None:
                # move the codes first, so that the model scores the codes it decodes
                self.quantizer.ema_update(e.detach(), idx)
            v = self.quantizer.codebook[idx]
            # the value is exactly v (e - e.detach() is zero), and the gradient at it is
            # copied to e alone: the choice of a code blocks the path to the codebook
            pyro.sample("z", dist.Delta(v.detach() + (e - e.detach()), event_dim=2))
            if training:
                terms = self.commitment * (e - v.detach()).pow(2).sum((-2, -1))
                if self.quantizer.ema_decay is None:
                    terms = terms + self.codebook_weight * (e.detach() - v).pow(2).sum((-2, -1))
                # a guide factor adds to log q: the loss -(log p - log q) grows by it
                pyro.factor("vq_terms", terms, has_rsample=True)

    def empty_share(self) -> None:
        """With moving averages, join the update's sums across ranks with no data: the
        codes decay like every other rank's."""
        if self.training and self.quantizer.ema_decay is not None:
            codebook = self.quantizer.codebook
            e = codebook.new_zeros(0, self.slots, self.code_dim)
            idx = torch.zeros(0, self.slots, dtype=torch.long, device=codebook.device)
            self.quantizer.ema_update(e, idx)

    def proposal(self, x: torch.Tensor) -> None:
        """The evaluator's proposal for ``"z"``: every slot drawn from
        ``softmax(scores / temperature)`` of the selection scores, so that every code
        array has a positive probability (a guide with the model's signature).

        :param x: ``(batch, x_dim)``.
        """
        self.pyro_module("encoder", self.encoder)
        self.pyro_module("codebook", self.quantizer)
        with pyro.plate("data", x.shape[0], dim=-1):
            logits = self.quantizer.scores(self.encode(x)) / self.temperature
            pyro.sample("z", Codebook(self.quantizer.codebook, logits))

    # -- exact quantities ---------------------------------------------------------------

    @torch.no_grad()
    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        """The notes' ELBO per point, ``log p(x | V[z*]) - m log k`` (deterministic:
        the guide is one point), ``(N,)``."""
        z = self.quantizer.codebook[self.quantizer.select(self.encode(x))]
        return self.likelihood(self.decoder(z.flatten(-2))).log_prob(x) - self.kl

    @torch.no_grad()
    def exact_log_likelihood(self, x: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """``log P(x)`` per point by summing ``"z"`` out with Pyro's parallel
        enumeration: ``logsumexp over the k^m code arrays of log p(z) + log p(x|z)``.

        One enumerated trace of the model gives the code arrays, their prior
        log-probabilities and the decoder's output for each (these do not depend on
        ``x``); the points are then scored against them in chunks.

        :param x: ``(N, x_dim)``.
        :param int chunk_size: points per chunk; by default as many as keep
            ``points x k^m`` at 2^15 (one likelihood value per pixel of each).
        :raises UsageError: when ``k^m`` exceeds :data:`MAX_ENUMERATION`.
        """
        combos = self.codes**self.slots
        if combos > MAX_ENUMERATION:
            raise UsageError(
                f"exact log P(X) sums over k^m = {self.codes}^{self.slots} = {combos} code "
                f"arrays, more than {MAX_ENUMERATION}; importance-sample it instead"
            )
        model = poutine.enum(
            pyro.infer.config_enumerate(self.model, default="parallel"), first_available_dim=-2
        )
        with poutine.block():
            trace = poutine.trace(model).get_trace(x[:1])
        trace.compute_log_prob()
        log_pz = trace.nodes["z"]["log_prob"]  # (k^m, 1)
        params = self.decoder(trace.nodes["z"]["value"].flatten(-2))  # (k^m, 1, out)
        chunk_size = chunk_size or max(1, 2**15 // combos)
        parts = []
        for start in range(0, len(x), chunk_size):
            log_px_z = self.likelihood(params).log_prob(x[start : start + chunk_size])
            parts.append((log_pz + log_px_z).logsumexp(0))  # (k^m, n) -> (n,)
        return torch.cat(parts)

    # -- what it can draw ---------------------------------------------------------------

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Codes drawn uniformly, the mean of ``p(x|z)``: ``(num_samples, x_dim)``."""
        codebook = self.quantizer.codebook
        idx = torch.randint(
            self.codes, (num_samples, self.slots), generator=generator, device=codebook.device
        )
        return self.likelihood.mean(self.decoder(codebook[idx].flatten(-2)))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of ``p(x | V[z*])`` at the selected codes."""
        z = self.quantizer.codebook[self.quantizer.select(self.encode(x))]
        return self.likelihood.mean(self.decoder(z.flatten(-2)))

    @torch.no_grad()
    def codebook_usage(self, x: torch.Tensor) -> dict[str, Any]:
        """How the guide uses the codebook on ``x``: the perplexity ``exp(H)`` of the
        code frequencies (k when all are used equally, 1 when one code takes all), the
        codes never chosen (dead), and the frequency of every code."""
        idx = self.quantizer.select(self.encode(x)).flatten()
        counts = torch.bincount(idx, minlength=self.codes).double()
        freq = counts / counts.sum()
        entropy = -(freq[freq > 0] * freq[freq > 0].log()).sum()
        return {
            "perplexity": float(entropy.exp()),
            "dead_codes": int((counts == 0).sum()),
            "codes": self.codes,
            "frequencies": freq.tolist(),
        }

    def diagnostics(self, x: torch.Tensor) -> dict[str, Any]:
        """Codebook use on ``x`` (:meth:`codebook_usage`) and the constant KL term."""
        usage = self.codebook_usage(x)
        return {
            "codebook_perplexity": usage["perplexity"],
            "dead_codes": usage["dead_codes"],
            "codes": usage["codes"],
            "kl_m_log_k": self.kl,
            "code_frequencies": usage["frequencies"],
        }
