"""Plain :class:`torch.nn.Module` networks. No Pyro calls in here: the model and
guide in :mod:`pyro_vae.vae` decide what is random and register these modules."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class MLP(nn.Sequential):
    """Fully connected network: ``Linear -> activation`` per hidden layer, then ``Linear``.

    :param int in_dim: input features.
    :param hidden_dims: widths of the hidden layers (may be empty).
    :param int out_dim: output features.
    :param activation: module class applied after each hidden layer.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dims: Sequence[int],
        out_dim: int,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        dims = [in_dim, *hidden_dims]
        layers: list[nn.Module] = []
        for d_in, d_out in itertools.pairwise(dims):
            layers += [nn.Linear(d_in, d_out), activation()]
        layers.append(nn.Linear(dims[-1], out_dim))
        super().__init__(*layers)


class GaussianEncoder(nn.Module):
    """Maps ``x`` to the ``loc`` and ``scale`` of a diagonal Gaussian over ``z``.

    ``scale = softplus(raw) + min_scale``: softplus keeps gradients tame where
    ``exp`` of a log-variance would overflow, and the floor keeps ``log q(z|x)``
    finite early in training.

    :param int in_dim: input features (pixels).
    :param hidden_dims: hidden layer widths, or an :class:`Architecture` whose encoder
        this is.
    :param int z_dim: latent dimension.
    :param float min_scale: lower bound on every standard deviation.
    :param activation: module class after each hidden layer (ReLU by default).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dims: Sequence[int],
        z_dim: int,
        min_scale: float = 1e-4,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.min_scale = min_scale
        self.net = as_architecture(hidden_dims, activation).encoder(in_dim, 2 * z_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:returns: ``(loc, scale)``, each of shape ``(batch, z_dim)``."""
        loc, raw_scale = self.net(x).split(self.z_dim, dim=-1)
        return loc, F.softplus(raw_scale) + self.min_scale


# --- architectures: how a model's networks between data and latents are built ---------

#: ``--network`` choices
NETWORKS = ("mlp", "conv")
#: channels of the two stride-2 convolutions of :class:`ConvEncoder` (mirrored by
#: :class:`ConvDecoder`)
CONV_CHANNELS = (32, 64)


def _halved(size: int, times: int) -> list[int]:
    """``[size, ceil(size/2), ...]``: the side lengths after each stride-2 convolution
    with kernel 3 and padding 1."""
    sizes = [size]
    for _ in range(times):
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


class _Flat(nn.Module):
    """Applies an image network to inputs with any leading dimensions: ``(..., D)`` ->
    ``(..., out)``, by flattening them into one batch dimension."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        return self.body(x.reshape(-1, self.in_dim)).reshape(*lead, -1)


class ConvEncoder(_Flat):
    """``(..., H * W)`` images -> ``(..., out_dim)``: two stride-2 3x3 convolutions with
    ``channels`` (32, 64) and ``activation``, then an :class:`MLP` with ``hidden_dims``.

    :param image_shape: ``(H, W)``; the input rows are the pixels in row-major order.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        hidden_dims: Sequence[int],
        out_dim: int,
        channels: Sequence[int] = CONV_CHANNELS,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        height, width = (int(s) for s in image_shape)
        super().__init__(height * width)
        layers: list[nn.Module] = [nn.Unflatten(1, (1, height, width))]
        for c_in, c_out in itertools.pairwise([1, *channels]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), activation()]
        h, w = _halved(height, len(channels))[-1], _halved(width, len(channels))[-1]
        layers += [nn.Flatten(), MLP(channels[-1] * h * w, hidden_dims, out_dim, activation)]
        self.body = nn.Sequential(*layers)


class ConvDecoder(_Flat):
    """``(..., in_dim)`` -> ``(..., out_channels * H * W)``: the mirror of
    :class:`ConvEncoder`. An :class:`MLP` with ``hidden_dims`` makes ``channels[-1]``
    feature maps of the encoder's last size; stride-2 transposed convolutions double
    them back to ``(H, W)``. The output is channel-major: ``out_channels`` blocks of the
    ``H * W`` pixels, the layout the likelihoods split (one block per parameter).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dims: Sequence[int],
        image_shape: Sequence[int],
        out_channels: int,
        channels: Sequence[int] = CONV_CHANNELS,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__(in_dim)
        height, width = (int(s) for s in image_shape)
        heights, widths = _halved(height, len(channels)), _halved(width, len(channels))
        layers: list[nn.Module] = [
            MLP(in_dim, hidden_dims, channels[-1] * heights[-1] * widths[-1], activation),
            activation(),
            nn.Unflatten(1, (channels[-1], heights[-1], widths[-1])),
        ]
        outs = [*channels[::-1][1:], out_channels]
        for i, (c_in, c_out) in enumerate(zip(channels[::-1], outs, strict=True)):
            level = len(channels) - 1 - i  # from the smallest maps up to the image
            extra = (
                heights[level] - 2 * heights[level + 1] + 1,
                widths[level] - 2 * widths[level + 1] + 1,
            )
            layers.append(
                nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=extra)
            )
            if i < len(channels) - 1:
                layers.append(activation())
        layers.append(nn.Flatten())
        self.body = nn.Sequential(*layers)


class Architecture:
    """How a model's networks between the data and the latents are built: the value
    that ``--network`` and ``--hidden-dims`` make. :meth:`encoder` maps data rows to
    features, :meth:`decoder` maps latents to the likelihood's parameters.

    :param hidden_dims: widths of the fully connected hidden layers.
    :param activation: module class after each hidden layer.
    """

    name = "mlp"

    def __init__(self, hidden_dims: Sequence[int], activation: type[nn.Module] = nn.ReLU) -> None:
        self.hidden_dims = tuple(int(h) for h in hidden_dims)
        self.activation = activation

    def encoder(self, in_dim: int, out_dim: int) -> nn.Module:
        """``(..., in_dim)`` -> ``(..., out_dim)``: an :class:`MLP`."""
        return MLP(in_dim, self.hidden_dims, out_dim, self.activation)

    def decoder(self, in_dim: int, out_dim: int) -> nn.Module:
        """``(..., in_dim)`` -> ``(..., out_dim)``: an :class:`MLP` with the hidden
        widths reversed."""
        return MLP(in_dim, self.hidden_dims[::-1], out_dim, self.activation)


class Convolutional(Architecture):
    """:class:`ConvEncoder` and :class:`ConvDecoder` for images of ``image_shape``; the
    fully connected layers between the feature maps and the latents have
    ``hidden_dims``.

    :param image_shape: ``(H, W)`` of the images, whose ``H * W`` pixels are the data
        rows the encoder takes and the decoder's output blocks.
    """

    name = "conv"

    def __init__(
        self,
        hidden_dims: Sequence[int],
        image_shape: Sequence[int],
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__(hidden_dims, activation)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.pixels = self.image_shape[0] * self.image_shape[1]

    def encoder(self, in_dim: int, out_dim: int) -> nn.Module:
        """A :class:`ConvEncoder`; ``in_dim`` must be the number of pixels."""
        if in_dim != self.pixels:
            raise ValueError(f"a conv encoder takes {self.pixels} pixels, not {in_dim} inputs")
        return ConvEncoder(self.image_shape, self.hidden_dims, out_dim, activation=self.activation)

    def decoder(self, in_dim: int, out_dim: int) -> nn.Module:
        """A :class:`ConvDecoder` with ``out_dim / (H * W)`` output channels."""
        if out_dim % self.pixels:
            raise ValueError(
                f"a conv decoder emits multiples of {self.pixels} values, not {out_dim}"
            )
        return ConvDecoder(
            in_dim,
            self.hidden_dims[::-1],
            self.image_shape,
            out_dim // self.pixels,
            activation=self.activation,
        )


def as_architecture(
    hidden_dims: Sequence[int] | Architecture, activation: type[nn.Module] = nn.ReLU
) -> Architecture:
    """``hidden_dims`` as an :class:`Architecture`: MLPs of those widths, unless it is one."""
    if isinstance(hidden_dims, Architecture):
        return hidden_dims
    return Architecture(hidden_dims, activation)
