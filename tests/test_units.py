import math

import pytest
import torch

from pyro_vae.data import dequantize
from pyro_vae.units import bits_per_dim


def test_uniform_density_on_dequantized_data_is_log2_levels_bits():
    # p(y) = 1 on [0, 1)^D: every one of the levels^D discrete images has probability
    # levels^-D, so exactly log2(levels) bits per dimension
    d, levels = 784, 256
    assert bits_per_dim(0.0, d, discrete=False, levels=levels, dequantized=True) == pytest.approx(
        8.0
    )


def test_dequantized_gaussian_by_hand():
    # a Gaussian density on y in 1-D with log p(y) = -1.3 nats and 17 levels:
    # log P(k) >= -1.3 - ln 17, so bits = (1.3 + ln 17) / ln 2
    got = bits_per_dim(torch.tensor([-1.3]), 1, discrete=False, levels=17, dequantized=True)
    assert got.item() == pytest.approx((1.3 + math.log(17)) / math.log(2))


def test_discrete_and_incomparable_cases():
    assert bits_per_dim(-784 * math.log(2), 784, discrete=True) == pytest.approx(1.0)
    assert bits_per_dim(-100.0, 784, discrete=False, levels=256, dequantized=False) is None


def test_dequantize_keeps_each_value_in_its_own_bin():
    levels = 17
    k = torch.arange(levels).repeat(100).float()
    y = dequantize(k / (levels - 1), levels, generator=torch.Generator().manual_seed(0))
    assert ((y * levels).floor() == k).all()  # (k + u) / levels stays in bin k
    assert (y >= 0).all() and (y < 1).all()
    # u is uniform: the position inside the bin averages 1/2 (3 s.e. of 1700 draws)
    assert abs((y * levels - k).mean().item() - 0.5) < 3 * (1 / 12 / 1700) ** 0.5
