"""The posterior diagnostics against torch.distributions and values worked out by hand."""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from pyro_vae.diagnostics import (
    ACTIVE_UNIT_THRESHOLD,
    ActiveUnits,
    active_units,
    kl_to_standard_normal,
)


def test_kl_matches_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    loc = 3 * torch.randn(7, 5, generator=gen, dtype=torch.float64)
    scale = torch.rand(7, 5, generator=gen, dtype=torch.float64) * 4 + 0.01  # (0.01, 4.01)
    expected = kl_divergence(Normal(loc, scale), Normal(0.0, 1.0))
    got = kl_to_standard_normal(loc, scale)
    assert got.shape == (7, 5)  # elementwise: one value per latent unit
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_kl_by_hand():
    # D[N(m, s^2) || N(0, 1)] = (s^2 + m^2 - 1) / 2 - log s
    loc = torch.tensor([0.0, 1.0, -2.0, 0.0, 0.0])
    scale = torch.tensor([1.0, 1.0, 1.0, 0.5, math.e])
    expected = torch.tensor([0.0, 0.5, 2.0, (0.25 - 1) / 2 + math.log(2), (math.e**2 - 1) / 2 - 1])
    torch.testing.assert_close(kl_to_standard_normal(loc, scale), expected)


def test_kl_broadcasts_and_sums_to_the_multivariate_kl():
    # a fixed scale for every unit (the autoencoder-limit guide) broadcasts against loc
    loc = torch.tensor([[0.3, -1.2, 2.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    got = kl_to_standard_normal(loc, torch.tensor(0.1, dtype=torch.float64))
    assert got.shape == (2, 3)
    # summed over the last dim: the KL of the diagonal Gaussian to N(0, I)
    q = torch.distributions.Independent(Normal(loc, 0.1), 1)
    p = torch.distributions.Independent(Normal(torch.zeros_like(loc), 1.0), 1)
    torch.testing.assert_close(got.sum(-1), kl_divergence(q, p))


def test_active_units_on_known_variances():
    # two points per column: the unbiased variance of (a, -a) is 2 a^2, so the columns'
    # variances are 0, 2 * 0.05^2 = 0.005 and 2
    loc = torch.tensor([[3.0, 0.05, 1.0], [3.0, -0.05, -1.0]], dtype=torch.float64)
    result = active_units(loc)
    assert isinstance(result, ActiveUnits)
    assert result.count == 1 and isinstance(result.count, int)
    torch.testing.assert_close(
        result.activity, torch.tensor([0.0, 0.005, 2.0], dtype=torch.float64)
    )
    assert ACTIVE_UNIT_THRESHOLD == 0.01  # Burda et al. 2016
    assert active_units(loc, threshold=0.001).count == 2
    assert active_units(loc, threshold=2.0).count == 0  # strictly above the threshold


def test_active_units_uses_the_variance_over_points():
    # many points: activity is the (unbiased) variance of each column over the rows
    gen = torch.Generator().manual_seed(1)
    loc = torch.randn(500, 4, generator=gen) * torch.tensor([0.0, 0.05, 0.2, 3.0])
    result = active_units(loc)
    torch.testing.assert_close(result.activity, loc.var(0))
    assert result.count == 2  # variances about 0, 0.0025, 0.04, 9


def test_active_units_rejects_what_is_not_a_matrix_of_points():
    with pytest.raises(ValueError, match=r"\(N, z_dim\).*\(5,\)"):
        active_units(torch.zeros(5))
    with pytest.raises(ValueError, match="N >= 2"):
        active_units(torch.zeros(1, 3))
