"""The plain torch networks: shapes, layouts and the architectures that build them."""

import pytest
import torch

from pyro_vae.networks import (
    Architecture,
    ConvDecoder,
    ConvEncoder,
    Convolutional,
    as_architecture,
)


@pytest.mark.parametrize("shape", [(28, 28), (8, 8), (7, 5)])
def test_conv_shapes_with_leading_dimensions(shape):
    pixels = shape[0] * shape[1]
    encoder = ConvEncoder(shape, (16,), out_dim=6)
    decoder = ConvDecoder(3, (16,), shape, out_channels=2)
    assert encoder(torch.rand(4, 2, pixels)).shape == (4, 2, 6)  # particles x batch
    assert decoder(torch.randn(5, 3)).shape == (5, 2 * pixels)
    assert decoder(torch.randn(4, 5, 3)).shape == (4, 5, 2 * pixels)


def test_conv_encoder_sees_the_image_not_a_flat_vector():
    # the rows are unflattened into the image: the first convolution's top-left output
    # (kernel 3, stride 2, padding 1) sees pixels (0..1, 0..1) of the image and no other
    torch.manual_seed(0)
    encoder = ConvEncoder((8, 8), (4,), out_dim=2)
    conv = encoder.body[1]
    x = torch.zeros(1, 1, 8, 8)
    base = conv(x)[0, :, 0, 0]
    x[0, 0, 2, 2] = 1.0  # outside the top-left window
    assert torch.equal(conv(x)[0, :, 0, 0], base)
    x[0, 0, 1, 1] = 1.0  # inside it
    assert not torch.equal(conv(x)[0, :, 0, 0], base)


def test_conv_decoder_output_is_channel_major():
    # the likelihoods split (..., parts * pixels) into parts blocks of pixels: the
    # first block must be the first output channel of the image
    torch.manual_seed(0)
    decoder = ConvDecoder(3, (8,), (8, 8), out_channels=2)
    z = torch.randn(2, 3)
    out = decoder(z)
    maps = decoder.body[:-1](z)  # before the final flatten: (2, channels, 8, 8)
    assert maps.shape == (2, 2, 8, 8)
    assert torch.equal(out[:, :64], maps[:, 0].reshape(2, 64))
    assert torch.equal(out[:, 64:], maps[:, 1].reshape(2, 64))


def test_architectures():
    mlp = as_architecture((32, 16))
    assert isinstance(mlp, Architecture) and mlp.name == "mlp"
    assert [m.out_features for m in mlp.decoder(4, 10) if isinstance(m, torch.nn.Linear)] == [
        16,
        32,
        10,
    ]
    conv = Convolutional((32,), (8, 8))
    assert as_architecture(conv) is conv
    assert conv.encoder(64, 5)(torch.rand(3, 64)).shape == (3, 5)
    assert conv.decoder(5, 128)(torch.randn(3, 5)).shape == (3, 128)
    with pytest.raises(ValueError, match="takes 64 pixels, not 63"):
        conv.encoder(63, 5)
    with pytest.raises(ValueError, match="multiples of 64"):
        conv.decoder(5, 100)
