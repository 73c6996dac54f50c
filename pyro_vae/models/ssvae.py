"""The semi-supervised VAE, M2 of Kingma, Rezende, Mohamed and Welling (2014).

Model ``P(y) P(z) P(X|y, z)``: a class ``y`` uniform over the classes, a style
``z ~ N(0, I)``, and the image through the decoder of ``[z, one_hot(y)]`` and any
likelihood. Guide ``Q(y|X) Q(z|X, y)``: a classifier network, and a member of a guide
family (:mod:`pyro_vae.guides`) of the image and the class.

The label is observed for some images and latent for the rest, in one
``pyro.plate("data")`` with a mask and no loop over points. The data are three tensors
``(y, known, x)``: one-hot classes, a ``(N, 1)`` flag of the labels the model may see,
and the images. In the model ``pyro.sample("y", ..., obs=labels, obs_mask=known)``
splits the site into ``"y_observed"``, scored at the label where it is known, and
``"y_unobserved"``, latent where it is not. The guide marks ``"y_unobserved"`` for
parallel enumeration: :class:`~pyro.infer.TraceEnum_ELBO` sums over the classes
exactly, weighting each by ``Q(y|X)`` (for a labelled image, ``Q`` is a point mass at
its label, so it contributes exactly the conditional term ``log P(y) + ELBO(X|y)``).
Labelled images add the paper's classification term ``alpha * log Q(y|X)``
(``alpha`` per labelled image, Pyro's ``aux_loss_multiplier``) while training.

``log P(X)`` sums ``y`` out exactly and importance-samples ``z``: the evaluator's
proposal is ``sum_y Q(y|X) Q(z|X, y)``, and the evaluator enumerates the model's
``"y_unobserved"``, which the proposal leaves out.

References:

- D. P. Kingma, D. J. Rezende, S. Mohamed, M. Welling. Semi-supervised Learning with
  Deep Generative Models. NeurIPS 2014.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine

from pyro_vae.errors import UsageError
from pyro_vae.guides import GuideFamily, get_guide_family
from pyro_vae.likelihoods import Bernoulli, Likelihood, get_likelihood
from pyro_vae.limits import MAX_ALPHA
from pyro_vae.models.base import Model, ModelData, Notation, Option
from pyro_vae.models.options import (
    GUIDE,
    NETWORK,
    NETWORK_OPTIONS,
    Z_DIM,
    architecture,
    check_sizes,
    guide_family_from_options,
    likelihood_from_options,
)
from pyro_vae.networks import Convolutional, PartialImages
from pyro_vae.parsing import at_least, between

LABELS = Option(
    "--labels",
    "training images whose class the ssvae sees, the same number of each class (the "
    "others are hidden)",
    default=100,
    type=at_least(1, 10**9),
)
ALPHA = Option(
    "--alpha",
    "weight of the ssvae's classification term -log Q(y|X) per labelled image (Kingma et "
    "al.'s alpha = 0.1 N spread over the labelled images; Pyro's aux_loss_multiplier)",
    default=50.0,
    type=between(0.0, MAX_ALPHA),
)
LABEL_SEED = Option(
    "--label-seed",
    "which images of each class keep their label: the seed of that draw",
    default=0,
    type=at_least(0, 2**31 - 1),
)


class SSVAE(Model):
    """M2: ``P(y) P(z) P(X|y, z)`` with the guide ``Q(y|X) Q(z|X, y)``.

    :param int x_dim: pixels per image.
    :param int num_classes: values of ``y``.
    :param int z_dim: dimension of the style ``z``.
    :param hidden_dims: hidden widths of every network.
    :param likelihood: ``P(X|y, z)``; Bernoulli by default.
    :param image_shape: ``(height, width)``, for pictures and ``network="conv"``.
    :param guide_family: the family of ``Q(z|X, y)``: ``"diagonal"`` or
        ``"full-covariance"`` (the evaluator needs its density at any z).
    :param str network: ``"mlp"`` or ``"conv"`` (the networks that read or draw images
        convolve them; the class joins after the convolutions).
    :param int labels: training images whose label the model sees (``training_data``).
    :param float alpha: weight of ``-log Q(y|X)`` per labelled image while training.
    :param int label_seed: which images of each class keep their labels.
    :param str name: prefix in Pyro's param store.
    """

    kind = "ssvae"
    summary = "P(y)P(z)P(X|y,z), labels observed for --labels images (Kingma et al. M2)"
    options = (Z_DIM, *NETWORK_OPTIONS, NETWORK, GUIDE, LABELS, ALPHA, LABEL_SEED)
    notation = Notation(guide="Q(y|X)Q(z|X,y)", prior="P(y)P(z)", posterior="P(y,z|X)")
    latent_sites = ("z", "y_unobserved")
    enumerated_sites = ("y_unobserved",)
    components: ClassVar[dict[str, Any]] = {
        "likelihood": lambda config: get_likelihood(**config),
        "guide_family": lambda config: get_guide_family(**config),
    }
    hints: ClassVar[dict[str, str]] = {
        "completions": "draw each class in one style with `pyro-vae sample`",
        "gap_decomposition": "the gap decomposition refines one latent site z, and M2 "
        "has two (y and z)",
    }
    proposal_note = "z from sum_y Q(y|X) Q(z|X,y), the classes summed out exactly"

    def __init__(
        self,
        x_dim: int,
        num_classes: int = 10,
        z_dim: int = 20,
        hidden_dims: Sequence[int] = (400,),
        likelihood: Likelihood | None = None,
        image_shape: Sequence[int] | None = None,
        guide_family: GuideFamily | str = "diagonal",
        network: str = "mlp",
        labels: int = 100,
        alpha: float = 50.0,
        label_seed: int = 0,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        check_sizes("SSVAE", x_dim=x_dim, z_dim=z_dim, hidden_dims=hidden_dims)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise UsageError(f"the ssvae needs at least 2 classes, got {num_classes!r}")
        if not (isinstance(alpha, (int, float)) and 0 <= alpha <= MAX_ALPHA):
            raise UsageError(
                f"{{alpha}} must be in [0, {MAX_ALPHA:g}], got {alpha!r}", settings=("alpha",)
            )
        self.x_dim, self.num_classes, self.z_dim = int(x_dim), num_classes, int(z_dim)
        self.hidden_dims = tuple(int(h) for h in hidden_dims)
        self.labels, self.alpha, self.label_seed = int(labels), float(alpha), int(label_seed)
        self.likelihood = likelihood if likelihood is not None else Bernoulli()
        self.likelihood.setup(self.x_dim)
        self._image_shape = tuple(image_shape) if image_shape is not None else None
        self.guide_family = get_guide_family(guide_family)
        if self.guide_family.name == "iaf":
            raise UsageError(
                "log P(X) of the ssvae proposes z from the mixture over classes of "
                "Q(z|X, y), which needs Q's density at any z; the inverse autoregressive "
                "flow of {guide} iaf gives it only at its own samples: choose {guide} "
                "diagonal or full-covariance",
                settings=("guide", "model"),
            )
        self.network = network
        images = architecture(network, self.hidden_dims, self._image_shape)
        c = num_classes
        self.classifier = images.encoder(self.x_dim, c)  # Q(y|X), logits
        if isinstance(images, Convolutional):  # [X, y]: the image, then the class
            pixels = torch.cat([torch.arange(self.x_dim), torch.full((c,), -1)])
            joint = PartialImages(self.hidden_dims, images.image_shape, pixels, pixels[:0])
        else:
            joint = images
        self.recognition = self.guide_family.build(self.x_dim + c, joint, self.z_dim)
        self.decoder = images.decoder(self.z_dim + c, self.x_dim * self.likelihood.params_per_dim)
        self.register_buffer("prior_loc", torch.zeros(self.z_dim))
        self.register_buffer("prior_scale", torch.ones(self.z_dim))
        self.register_buffer("class_logits", torch.zeros(c))  # P(y): uniform

    @classmethod
    def from_options(cls, options: dict[str, Any], dataset) -> SSVAE:
        """The ssvae of ``pyro-vae train --model ssvae --labels N`` for ``dataset``."""
        if dataset.y_train is None:
            raise UsageError(
                f"--model ssvae needs the classes of the training images, and "
                f"{dataset.name} has none; use a labelled data set (mnist5k, digits, "
                "mnist, fashion-mnist)",
                settings=("model",),
            )
        model = cls(
            dataset.x_dim,
            num_classes=int(dataset.y_train.max()) + 1,
            z_dim=options["z_dim"],
            hidden_dims=options["hidden_dims"],
            likelihood=likelihood_from_options(options, dataset),
            image_shape=dataset.image_shape,
            guide_family=guide_family_from_options(options),
            network=options.get("network", "mlp"),
            labels=options["labels"],
            alpha=options["alpha"],
            label_seed=options["label_seed"],
        )
        model.labelled_indices(dataset.y_train)  # refuses a --labels the split cannot give
        return model

    @property
    def data_dims(self) -> tuple[int, int, int]:
        """``(num_classes, 1, x_dim)``: one-hot classes, the known flag, the images."""
        return (self.num_classes, 1, self.x_dim)

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """``(height, width)`` of the images, or ``None``."""
        return self._image_shape

    def describe(self) -> str:
        """``"SSVAE (100 labels)"``."""
        return f"SSVAE ({self.labels} labels)"

    # -- data ---------------------------------------------------------------------------

    def training_data(self, dataset) -> ModelData:
        """``(y, known, x)``: the labels of :meth:`labelled_indices` known, the others
        hidden (their one-hot rows zeroed); on the test split every label is hidden from
        the model and kept for the accuracy."""
        from pyro_vae.splits import batch_transform

        y = self._one_hot(dataset.y_train, "training")
        known = torch.zeros(len(y), 1, device=y.device)
        known[self.labelled_indices(dataset.y_train).to(y.device)] = 1.0
        test = self.evaluation_data(dataset, "test")
        return ModelData(
            (y * known, known, dataset.x_train), test, (None, None, batch_transform(dataset))
        )

    def evaluation_data(self, dataset, split: str) -> tuple[torch.Tensor, ...]:
        """``(y, known = 0, x)`` of ``split``: every label hidden from the model, so that
        the evaluator scores ``log P(X)`` with ``y`` summed out."""
        from pyro_vae.splits import evaluation_split

        x = evaluation_split(dataset, split)
        y = self._one_hot(dataset.y_test if split == "test" else dataset.y_train, split)
        return (y, torch.zeros(len(y), 1, device=y.device), x)

    def labelled_indices(self, classes: torch.Tensor) -> torch.Tensor:
        """The training images whose label the model sees: ``labels // num_classes`` of
        every class, and one more of the first ``labels % num_classes`` classes in an
        order drawn with ``label_seed``, each class's images drawn with the same seed.

        :raises UsageError: more labels than images of a class, or fewer than classes.
        """
        c = self.num_classes
        if self.labels < c or self.labels > len(classes):
            raise UsageError(
                f"{{labels}} {self.labels} must lie between {c} (one per class) and the "
                f"{len(classes)} training images",
                settings=("labels",),
            )
        g = torch.Generator().manual_seed(self.label_seed)
        extra = set(torch.randperm(c, generator=g)[: self.labels % c].tolist())
        chosen = []
        for k in range(c):
            members = (classes.cpu() == k).nonzero().squeeze(1)
            want = self.labels // c + (k in extra)
            if want > len(members):
                raise UsageError(
                    f"{{labels}} {self.labels} asks for {want} images of class {k}, which has "
                    f"{len(members)}; choose at most {c * len(members)}",
                    settings=("labels",),
                )
            chosen.append(members[torch.randperm(len(members), generator=g)[:want]])
        return torch.cat(chosen).sort().values

    def _one_hot(self, classes: torch.Tensor | None, split: str) -> torch.Tensor:
        if classes is None:
            raise UsageError(f"the {split} split has no classes; the ssvae needs them")
        return F.one_hot(classes.long(), self.num_classes).float()

    def check_data(self, *data: torch.Tensor, what: str = "data") -> None:
        """Shapes, one-hot rows (or zero rows where the label is hidden), a 0/1 flag."""
        super().check_data(*data, what=what)
        y, known = data[0], data[1]
        if not bool(((known == 0) | (known == 1)).all()):
            raise UsageError(f"{what}: the known flags must be 0 or 1")
        rows = y.sum(-1)
        if not bool((((y == 0) | (y == 1)).all()) and ((rows == 1) | (rows == 0)).all()):
            raise UsageError(f"{what}: every class row must be one-hot (or zero when hidden)")
        if bool((known[:, 0] > rows).any()):
            raise UsageError(f"{what}: a label marked known has a zero class row")

    # -- Pyro ---------------------------------------------------------------------------

    def _decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Decoder parameters for ``z`` and class indices ``y``, broadcast together."""
        one_hot = F.one_hot(y, self.num_classes).to(z.dtype)
        lead = torch.broadcast_shapes(z.shape[:-1], one_hot.shape[:-1])
        inputs = [z.expand(*lead, z.shape[-1]), one_hot.expand(*lead, self.num_classes)]
        return self.decoder(torch.cat(inputs, -1))

    def _recognize(self, x: torch.Tensor, y: torch.Tensor) -> dist.TorchDistribution:
        """``Q(z|X, y)`` for images ``x`` and class indices ``y``, broadcast together."""
        one_hot = F.one_hot(y, self.num_classes).to(x.dtype)
        lead = torch.broadcast_shapes(x.shape[:-1], one_hot.shape[:-1])
        inputs = torch.cat([x.expand(*lead, self.x_dim), one_hot.expand(*lead, -1)], -1)
        return self.guide_family.distribution(self.recognition, self.recognition(inputs))

    @staticmethod
    def _split(y: torch.Tensor, known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return y.argmax(-1), known[..., 0] > 0.5

    def model(self, y: torch.Tensor, known: torch.Tensor, x: torch.Tensor) -> None:
        """``y ~ P(y)`` (observed where ``known``), ``z ~ N(0, I)``, ``X ~ P(X|y, z)``;
        while training, ``alpha * log Q(y|X)`` for the labelled images.

        :param y: ``(N, num_classes)`` one-hot classes (rows of hidden labels unused).
        :param known: ``(N, 1)``, 1 where the label is observed.
        :param x: ``(N, x_dim)`` images.
        """
        labels, labelled = self._split(y, known)
        self.pyro_module("decoder", self.decoder)
        self.pyro_likelihood()
        prior_y = dist.Categorical(logits=self.class_logits)
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(self.prior_loc, self.prior_scale).to_event(1))
            label = pyro.sample("y", prior_y, obs=labels, obs_mask=labelled)
            pyro.sample("x", self.likelihood(self._decode(z, label)), obs=x)
            if self.training and self.alpha > 0:  # the classification term (not in P)
                self.pyro_module("classifier", self.classifier)
                log_q = dist.Categorical(logits=self.classifier(x)).log_prob(labels)
                pyro.factor("classification", self.alpha * torch.where(labelled, log_q, 0.0))

    def _class_logits(self, x: torch.Tensor, labels: torch.Tensor, labelled: torch.Tensor):
        """``Q(y|X)``'s logits; a point mass at the label where it is known."""
        logits = self.classifier(x)
        point = torch.full_like(logits, -math.inf).scatter(-1, labels.unsqueeze(-1), 0.0)
        return torch.where(labelled.unsqueeze(-1), point, logits)

    def guide(self, y: torch.Tensor, known: torch.Tensor, x: torch.Tensor) -> None:
        """``y ~ Q(y|X)`` where the label is hidden (enumerated), then ``z ~ Q(z|X, y)``."""
        labels, labelled = self._split(y, known)
        self.pyro_module("classifier", self.classifier)
        self.pyro_module("recognition", self.recognition)
        with pyro.plate("data", x.shape[0], dim=-1):
            q_y = dist.Categorical(logits=self._class_logits(x, labels, labelled))
            with poutine.mask(mask=~labelled):
                guess = pyro.sample("y_unobserved", q_y, infer={"enumerate": "parallel"})
            pyro.sample("z", self._recognize(x, torch.where(labelled, labels, guess)))

    def proposal(self, y: torch.Tensor, known: torch.Tensor, x: torch.Tensor) -> None:
        """What the evaluator draws ``z`` from: ``sum_y Q(y|X) Q(z|X, y)``, a mixture
        whose density is exact; the evaluator sums the model's ``y`` out itself.

        :raises UsageError: for a labelled image (``log P(X)`` hides every label).
        """
        if bool((known > 0.5).any()):
            raise UsageError("log P(X) sums the class out: pass the images with known = 0")
        self.pyro_module("classifier", self.classifier)
        self.pyro_module("recognition", self.recognition)
        classes = torch.arange(self.num_classes, device=x.device)
        with pyro.plate("data", x.shape[0], dim=-1):
            components = self._recognize(x.unsqueeze(-2), classes)  # batch (N, classes)
            mixture = dist.Categorical(logits=self.classifier(x))
            pyro.sample("z", dist.MixtureSameFamily(mixture, components))

    # -- what it can do -----------------------------------------------------------------

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable class under ``Q(y|X)``, ``(N,)``."""
        return self.classifier(x).argmax(-1)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Every class in the same styles: ``z`` drawn once per row of ``num_classes``
        images, row-major, so that a grid ``num_classes`` wide shows one style per row.

        :returns: ``(num_samples, x_dim)``, the means of ``P(X|y, z)``.
        """
        c = self.num_classes
        rows = -(-num_samples // c)
        kw = dict(generator=generator, device=self.prior_loc.device, dtype=self.prior_loc.dtype)
        z = torch.randn(rows, 1, self.z_dim, **kw)
        classes = torch.arange(c, device=z.device).expand(rows, c)
        images = self.likelihood.mean(self._decode(z, classes))
        return images.reshape(rows * c, self.x_dim)[:num_samples]

    @property
    def sample_columns(self) -> int:
        """One column per class: each row of a sample grid is one style."""
        return self.num_classes

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of ``P(X|y, z)`` at ``Q(y|X)``'s most probable class and the centre
        of ``Q(z|X, y)``."""
        label = self.classify(x)
        one_hot = F.one_hot(label, self.num_classes).to(x.dtype)
        center = self.guide_family.center(
            self.recognition, self.recognition(torch.cat([x, one_hot], -1))
        )
        return self.likelihood.mean(self._decode(center, label))

    @torch.no_grad()
    def diagnostics(self, y: torch.Tensor, known: torch.Tensor, x: torch.Tensor) -> dict[str, Any]:
        """The test accuracy of ``Q(y|X)`` and how many training labels it saw."""
        correct = (self.classify(x) == y.argmax(-1)).double()
        return {
            "accuracy": float(correct.mean()),
            "test_error": float(1 - correct.mean()),
            "labels": self.labels,
        }
