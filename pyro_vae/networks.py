"""Plain :class:`torch.nn.Module` networks. No Pyro calls in here: the model and
guide in :mod:`pyro_vae.models` decide what is random and register these modules."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from pyro_vae.memory import check_fits, dense_parameters


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
        widths = [*dims, out_dim]
        check_fits(
            dense_parameters(widths),
            f"the network {'-'.join(map(str, widths))}",
            "use smaller {hidden_dims} or latent sizes",
            settings=("hidden_dims",),
        )
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


def _convolutions(
    in_channels: int, channels: Sequence[int], activation: type[nn.Module]
) -> list[nn.Module]:
    """Stride-2 3x3 convolutions (padding 1) through ``channels``, each followed by
    ``activation``: every one halves the side lengths, rounding up."""
    layers: list[nn.Module] = []
    for c_in, c_out in itertools.pairwise([in_channels, *channels]):
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), activation()]
    return layers


class _Flat(nn.Module):
    """Applies an image network to inputs with any leading dimensions: ``(..., D)`` ->
    ``(..., out)``, by flattening them into one batch dimension."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        out = self.body(x.reshape(-1, self.in_dim))
        return out.reshape(*lead, out.shape[-1])


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
        h, w = _halved(height, len(channels))[-1], _halved(width, len(channels))[-1]
        self.body = nn.Sequential(
            nn.Unflatten(1, (1, height, width)),
            *_convolutions(1, channels, activation),
            nn.Flatten(),
            MLP(channels[-1] * h * w, hidden_dims, out_dim, activation),
        )


class CanvasEncoder(_Flat):
    """Inputs that hold some pixels of an image, and perhaps other features, -> ``(...,
    out_dim)``. The pixels go to their places on a canvas, with a second channel marking
    the pixels the input gives; the canvas goes through :class:`ConvEncoder`'s
    convolutions, and the other features join their output before the :class:`MLP`.

    :param image_shape: ``(H, W)``.
    :param pixels: ``(in_dim,)`` integers: the pixel (row-major index) each input column
        holds, or -1 for a column that is no pixel (a class label).
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        pixels: torch.Tensor,
        hidden_dims: Sequence[int],
        out_dim: int,
        channels: Sequence[int] = CONV_CHANNELS,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__(len(pixels))
        height, width = (int(s) for s in image_shape)
        self.image_shape = (height, width)
        pixels = torch.as_tensor(pixels, dtype=torch.long)
        is_pixel = pixels >= 0
        self.register_buffer("pixel_columns", is_pixel.nonzero().squeeze(1), persistent=False)
        self.register_buffer("pixel_places", pixels[is_pixel], persistent=False)
        self.register_buffer("other_columns", (~is_pixel).nonzero().squeeze(1), persistent=False)
        given = torch.zeros(height * width)
        given[pixels[is_pixel]] = 1.0
        self.register_buffer("given", given, persistent=False)
        self.convs = nn.Sequential(*_convolutions(2, channels, activation), nn.Flatten())
        h, w = _halved(height, len(channels))[-1], _halved(width, len(channels))[-1]
        features = channels[-1] * h * w + len(self.other_columns)
        self.mlp = MLP(features, hidden_dims, out_dim, activation)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_dim)`` -> ``(B, out_dim)``."""
        batch = x.shape[0]
        canvas = x.new_zeros(batch, self.given.numel())
        canvas[:, self.pixel_places] = x[:, self.pixel_columns]
        image = torch.stack([canvas, self.given.expand(batch, -1)], 1)
        features = self.convs(image.unflatten(-1, self.image_shape))
        return self.mlp(torch.cat([features, x[:, self.other_columns]], -1))


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


class CanvasDecoder(ConvDecoder):
    """A :class:`ConvDecoder` that keeps the pixels ``keep`` of each output channel:
    ``(..., in_dim)`` -> ``(..., out_channels * len(keep))``, channel-major.

    :param keep: row-major indices of the pixels to emit.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dims: Sequence[int],
        image_shape: Sequence[int],
        out_channels: int,
        keep: torch.Tensor,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__(in_dim, hidden_dims, image_shape, out_channels, activation=activation)
        self.out_channels = out_channels
        self.register_buffer("keep", torch.as_tensor(keep, dtype=torch.long), persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        full = super().forward(z).unflatten(-1, (self.out_channels, -1))
        return full[..., self.keep].flatten(-2)


class PartialImages(Architecture):
    """Convolutional networks for a conditional task whose X and Y are parts of one
    image (:mod:`pyro_vae.tasks`): an encoder of ``[X, Y]`` or of ``X`` alone places
    their pixels on a canvas (:class:`CanvasEncoder`; a class label joins after the
    convolutions), and the decoder draws the whole image and emits Y's pixels
    (:class:`CanvasDecoder`; its input, z and X, enters through the fully connected
    layers).

    :param x_pixels: ``(x_dim,)`` pixel index of each column of X, -1 where X is no
        image (the label task).
    :param y_pixels: ``(y_dim,)`` pixel index of each column of Y.
    """

    name = "conv"

    def __init__(
        self,
        hidden_dims: Sequence[int],
        image_shape: Sequence[int],
        x_pixels: torch.Tensor,
        y_pixels: torch.Tensor,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__(hidden_dims, activation)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.x_pixels = torch.as_tensor(x_pixels, dtype=torch.long)
        self.y_pixels = torch.as_tensor(y_pixels, dtype=torch.long)

    def encoder(self, in_dim: int, out_dim: int) -> nn.Module:
        """A :class:`CanvasEncoder` of ``[X, Y]`` (``in_dim = x_dim + y_dim``) or of X."""
        layouts = {
            len(self.x_pixels) + len(self.y_pixels): torch.cat([self.x_pixels, self.y_pixels]),
            len(self.x_pixels): self.x_pixels,
        }
        if in_dim not in layouts:
            raise ValueError(f"inputs of {in_dim} columns are neither [X, Y] nor X")
        return CanvasEncoder(
            self.image_shape, layouts[in_dim], self.hidden_dims, out_dim, activation=self.activation
        )

    def decoder(self, in_dim: int, out_dim: int) -> nn.Module:
        """A :class:`CanvasDecoder` emitting Y's pixels, ``out_dim / y_dim`` per pixel."""
        if out_dim % len(self.y_pixels):
            raise ValueError(f"Y has {len(self.y_pixels)} pixels; {out_dim} outputs do not divide")
        return CanvasDecoder(
            in_dim,
            self.hidden_dims[::-1],
            self.image_shape,
            out_dim // len(self.y_pixels),
            self.y_pixels,
            activation=self.activation,
        )


def as_architecture(
    hidden_dims: Sequence[int] | Architecture, activation: type[nn.Module] = nn.ReLU
) -> Architecture:
    """``hidden_dims`` as an :class:`Architecture`: MLPs of those widths, unless it is one."""
    if isinstance(hidden_dims, Architecture):
        return hidden_dims
    return Architecture(hidden_dims, activation)
