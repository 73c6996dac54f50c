import pytest
import torch
from torch.nn import functional as F

from pyro_vae.errors import UsageError
from pyro_vae.likelihoods import Bernoulli, Gaussian, get_likelihood


def test_bernoulli_log_prob_is_negative_binary_cross_entropy():
    logits = torch.randn(5, 7)
    x = (torch.rand(5, 7) > 0.5).float()
    d = Bernoulli()(logits)
    assert d.event_shape == (7,) and d.batch_shape == (5,)
    expected = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    torch.testing.assert_close(d.log_prob(x), expected)
    torch.testing.assert_close(Bernoulli().mean(logits), torch.sigmoid(logits))


def test_gaussian_log_prob_matches_torch_normal():
    loc, x = torch.randn(4, 6), torch.randn(4, 6)
    d = Gaussian(sigma=0.3)(loc)
    expected = torch.distributions.Normal(loc, 0.3).log_prob(x).sum(-1)
    torch.testing.assert_close(d.log_prob(x), expected)
    # closed form: -||x - f||^2 / (2 sigma^2) - D log(sigma sqrt(2 pi))
    by_hand = -((x - loc) ** 2).sum(-1) / (2 * 0.09) - 6 * torch.log(
        torch.tensor(0.3 * (2 * torch.pi) ** 0.5)
    )
    torch.testing.assert_close(d.log_prob(x), by_hand)


def test_bernoulli_rejects_grey_levels_with_the_fix():
    with pytest.raises(UsageError, match="--binarize static or --binarize dynamic"):
        Bernoulli().check_data(torch.tensor([[0.0, 0.5, 1.0]]))
    Bernoulli().check_data(torch.tensor([[0.0, 1.0]]))  # binary: accepted


def test_registry():
    assert get_likelihood("gaussian", sigma=0.2).config() == {"name": "gaussian", "sigma": 0.2}
    with pytest.raises(UsageError, match="valid names: bernoulli, gaussian"):
        get_likelihood("poisson")
    with pytest.raises(UsageError, match="sigma must be > 0"):
        Gaussian(sigma=0.0)
