import math

import mpmath
import numpy as np
import pytest
import torch
from scipy import stats
from torch.nn import functional as F

from pyro_vae.errors import UsageError
from pyro_vae.likelihoods import (
    LIKELIHOODS,
    Bernoulli,
    Beta,
    ContinuousBernoulli,
    DiscretizedLogistic,
    DiscretizedLogisticDistribution,
    Gaussian,
    Laplace,
    get_likelihood,
)

D64 = torch.float64


def test_bernoulli_log_prob_is_negative_binary_cross_entropy():
    logits = torch.randn(5, 7)
    x = (torch.rand(5, 7) > 0.5).float()
    d = Bernoulli()(logits)
    assert d.event_shape == (7,) and d.batch_shape == (5,)
    expected = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    torch.testing.assert_close(d.log_prob(x), expected)
    torch.testing.assert_close(Bernoulli().mean(logits), torch.sigmoid(logits))


@pytest.mark.parametrize(
    "logits_shape, value_shape", [((6, 9), (6, 9)), ((4, 6, 9), (6, 9)), ((3, 1, 9), (1, 9))]
)
def test_bernoulli_pixels_equal_pyros_bernoulli_in_value_and_gradient(logits_shape, value_shape):
    # the fused sum over pixels against Pyro's element-wise Bernoulli, in float64,
    # with logits from moderate to far past where exp over- or underflows in float32
    import pyro.distributions as dist

    from pyro_vae.likelihoods.pixels import BernoulliPixels

    gen = torch.Generator().manual_seed(0)
    scale = torch.tensor([0.1, 1.0, 5.0, 30.0, 120.0, 1e4, 1.0, 3.0, 0.5], dtype=torch.float64)
    logits = torch.randn(logits_shape, generator=gen, dtype=torch.float64) * scale
    logits.requires_grad_()
    x = (torch.rand(value_shape, generator=gen) > 0.5).double()
    weights = torch.randn(logits_shape[:-1], generator=gen, dtype=torch.float64)
    ours = BernoulliPixels(logits).log_prob(x)
    pyros = dist.Bernoulli(logits=logits).to_event(1).log_prob(x)
    torch.testing.assert_close(ours, pyros, rtol=1e-12, atol=1e-9)
    (g_ours,) = torch.autograd.grad((ours * weights).sum(), logits)
    (g_pyro,) = torch.autograd.grad((pyros * weights).sum(), logits)
    torch.testing.assert_close(g_ours, g_pyro, rtol=1e-12, atol=1e-12)


def test_bernoulli_pixels_round_in_float32_as_pyros_bernoulli_does():
    import pyro.distributions as dist

    from pyro_vae.likelihoods.pixels import BernoulliPixels

    gen = torch.Generator().manual_seed(1)
    for scale in (1.0, 5.0, 30.0):
        logits = torch.randn(64, 784, generator=gen) * scale
        x = (torch.rand(64, 784, generator=gen) < 0.3).float()
        exact = dist.Bernoulli(logits=logits.double()).to_event(1).log_prob(x.double())
        pyros = dist.Bernoulli(logits=logits).to_event(1).log_prob(x).double()
        ours = BernoulliPixels(logits).log_prob(x).double()
        # float32 sums of 784 terms: errors of the same size as Pyro's own
        pyro_error = float((pyros - exact).abs().max())
        assert float((ours - exact).abs().max()) <= 2 * pyro_error + 1e-5 * scale


def test_bernoulli_pixels_keep_their_class_and_fall_back_where_they_must():
    from pyro_vae.likelihoods.pixels import BernoulliPixels

    logits = torch.randn(5, 7)
    d = Bernoulli()(logits)
    assert isinstance(d, BernoulliPixels)
    wide = d.expand((3, 5))  # as pyro.plate broadcasts it
    assert isinstance(wide, BernoulliPixels) and wide.batch_shape == (3, 5)
    x = (torch.rand(5, 7) > 0.5).float()
    expected = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    torch.testing.assert_close(wide.log_prob(x), expected.expand(3, 5))
    # a value that needs a gradient, or that would broadcast the logits, takes Pyro's path
    value = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(d.log_prob(value).sum(), value)
    torch.testing.assert_close(grad, logits)  # d/dx [x l - softplus(l)] = l
    row = torch.randn(1, 7)
    torch.testing.assert_close(
        Bernoulli()(row).log_prob(x),
        -F.binary_cross_entropy_with_logits(row.expand(5, 7), x, reduction="none").sum(-1),
    )


def test_continuous_bernoulli_includes_the_normalizing_constant():
    logits = torch.randn(4, 6, dtype=D64)
    x = torch.rand(4, 6, dtype=D64)
    lam = torch.sigmoid(logits)
    # C(lambda) = 2 atanh(1 - 2 lambda) / (1 - 2 lambda)  (Loaiza-Ganem and Cunningham, eq. 7)
    log_c = torch.log(2 * torch.atanh(1 - 2 * lam) / (1 - 2 * lam))
    by_hand = (x * lam.log() + (1 - x) * (1 - lam).log() + log_c).sum(-1)
    torch.testing.assert_close(ContinuousBernoulli()(logits).log_prob(x), by_hand)
    # the density integrates to one over [0, 1]: midpoint rule on a fine grid
    grid = (torch.arange(20000, dtype=D64) + 0.5) / 20000
    one_pixel = ContinuousBernoulli()(torch.full((20000, 1), 1.3, dtype=D64))
    assert one_pixel.log_prob(grid[:, None]).exp().mean().item() == pytest.approx(1.0, abs=1e-6)


def test_gaussian_fixed_sigma_matches_the_closed_form():
    loc, x = torch.randn(4, 6), torch.randn(4, 6)
    d = Gaussian(sigma=0.3)(loc)
    expected = torch.distributions.Normal(loc, 0.3).log_prob(x).sum(-1)
    torch.testing.assert_close(d.log_prob(x), expected)
    # -||x - f||^2 / (2 sigma^2) - D log(sigma sqrt(2 pi))
    by_hand = -((x - loc) ** 2).sum(-1) / (2 * 0.09) - 6 * math.log(0.3 * math.sqrt(2 * math.pi))
    torch.testing.assert_close(d.log_prob(x), by_hand)


@pytest.mark.parametrize("cls,family", [(Gaussian, stats.norm), (Laplace, stats.laplace)])
def test_learned_scales_shapes_bounds_and_densities(cls, family):
    x_dim = 5
    shared, pixel, predicted = cls("shared"), cls("per-pixel"), cls("predicted")
    for lik in (shared, pixel, predicted):
        lik.setup(x_dim)
    assert shared.raw_scale.shape == () and pixel.raw_scale.shape == (x_dim,)
    assert predicted.params_per_dim == 2 and not list(predicted.parameters())
    # initial scale 0.1, as documented
    torch.testing.assert_close(pixel.loc_scale(torch.zeros(x_dim))[1], torch.full((x_dim,), 0.1))
    out = torch.randn(3, 2 * x_dim, dtype=D64)
    loc, scale = predicted.loc_scale(out)
    expected = family.logpdf(np.zeros((3, x_dim)), loc.numpy(), scale.detach().numpy()).sum(-1)
    np.testing.assert_allclose(predicted(out).log_prob(torch.zeros(3, x_dim, dtype=D64)), expected)
    # bounded below: a raw scale of -1000 gives min_scale, not zero
    very_small = predicted.loc_scale(torch.full((1, 2 * x_dim), -1000.0))[1]
    torch.testing.assert_close(very_small, torch.full((1, x_dim), 1e-3))


def test_laplace_fixed_scale_matches_scipy():
    loc, x = torch.randn(3, 4, dtype=D64), torch.randn(3, 4, dtype=D64)
    expected = stats.laplace.logpdf(x.numpy(), loc.numpy(), 0.2).sum(-1)
    np.testing.assert_allclose(Laplace(0.2)(loc).log_prob(x).numpy(), expected)


def test_beta_density_of_squeezed_pixels_with_jacobian():
    lik = Beta(eps=1e-3)
    out = torch.randn(2, 2 * 4, dtype=D64)
    a, b = lik.concentrations(out)
    x = torch.tensor([[0.0, 0.3, 0.9, 1.0], [1.0, 0.5, 0.0, 0.25]], dtype=D64)
    squeezed = 1e-3 + (1 - 2e-3) * x
    expected = (stats.beta.logpdf(squeezed.numpy(), a.numpy(), b.numpy()) + math.log(1 - 2e-3)).sum(
        -1
    )
    np.testing.assert_allclose(lik(out).log_prob(x).numpy(), expected, rtol=1e-10)
    mean = lik.mean(out)
    torch.testing.assert_close(mean, (a / (a + b) - 1e-3) / (1 - 2e-3))


def mp_discretized_logistic_log_prob(x, loc, scale, levels):
    """``log P(x)`` computed directly in mpmath: ``log(sigmoid(u) - sigmoid(l))`` with
    ``u, l = (x - loc +- h) / scale`` and the first and last bins open to -inf, +inf.

    The inputs are taken as the exact binary values of the floats given. Where both
    sigmoids are near 1 the difference cancels ``log10(e) * l`` digits, so the working
    precision is 50 digits plus that many.
    """
    k = round(x * (levels - 1))
    x, loc, scale = mpmath.mpf(x), mpmath.mpf(loc), mpmath.mpf(scale)
    h = mpmath.mpf(0.5 / (levels - 1))  # the float the library uses
    u, lower = (x - loc + h) / scale, (x - loc - h) / scale
    with mpmath.workdps(50 + max(0, int(lower * mpmath.log10(mpmath.e)) + 1)):

        def sigmoid(t):
            return 1 / (1 + mpmath.exp(-t))

        if k == 0:
            p = sigmoid(u)
        elif k == levels - 1:
            p = 1 - sigmoid(lower)
        else:
            p = sigmoid(u) - sigmoid(lower)
        return float(mpmath.log(p))


#: (loc, scale) pairs: interior, both tails far out (loc beyond either end, tiny scales),
#: log-probabilities down to about -5000 nats
DISCRETIZED_LOGISTIC_CASES = [
    (0.3, 0.05),
    (0.0, 0.01),
    (1.2, 0.2),
    (0.5, 1e-4),
    (-0.4, 0.02),
    (1.5, 0.003),
]
#: float64 against 50+ digit arithmetic: the largest error seen was 4e-16 relative
#: (9e-13 nats at -4980); 1e-13 leaves a few hundred ulps
FLOAT64_RTOL, FLOAT64_ATOL = 1e-13, 1e-14
#: float32 against mpmath on the same float32 inputs. float32 rounds u and l to 6e-8
#: relative; with 256 levels a bin is 1/(255 scale) wide in u, so the bin mass keeps
#: fewer digits (largest error seen 5e-5 nats; 4e-4 nats at log P = -4980)
FLOAT32_RTOL, FLOAT32_ATOL = 1e-6, 2e-4


@pytest.mark.parametrize("levels", [17, 256])
@pytest.mark.parametrize("loc,scale", DISCRETIZED_LOGISTIC_CASES)
def test_discretized_logistic_against_high_precision(levels, loc, scale):
    # every level of 17; of 256, every 15th (0, 15, ..., 255) and the two next to the ends
    k = torch.arange(levels) if levels == 17 else [*torch.arange(0, 256, 15).tolist(), 1, 254]
    grid = torch.as_tensor(k).sort().values.to(D64) / (levels - 1)
    d = DiscretizedLogisticDistribution(
        torch.tensor(loc, dtype=D64), torch.tensor(scale, dtype=D64), levels
    )
    expected = torch.tensor(
        [mp_discretized_logistic_log_prob(v, loc, scale, levels) for v in grid.tolist()],
        dtype=D64,
    )
    torch.testing.assert_close(d.log_prob(grid), expected, rtol=FLOAT64_RTOL, atol=FLOAT64_ATOL)
    # float32, as a decoder computes it: finite and accurate in both tails
    grid32, loc32, scale32 = grid.float(), torch.tensor(loc), torch.tensor(scale)
    expected32 = torch.tensor(
        [
            mp_discretized_logistic_log_prob(v, loc32.item(), scale32.item(), levels)
            for v in grid32.tolist()
        ],
        dtype=D64,
    )
    got32 = DiscretizedLogisticDistribution(loc32, scale32, levels).log_prob(grid32)
    torch.testing.assert_close(got32.double(), expected32, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)


def test_discretized_logistic_is_a_distribution_over_levels():
    levels = 17
    grid = torch.arange(levels, dtype=D64) / (levels - 1)
    for loc, scale in DISCRETIZED_LOGISTIC_CASES:
        d = DiscretizedLogisticDistribution(
            torch.tensor(loc, dtype=D64), torch.tensor(scale, dtype=D64), levels
        )
        assert torch.logsumexp(d.log_prob(grid), 0).item() == pytest.approx(0.0, abs=1e-9)
    # sampling: grey levels only, with the frequencies of the probabilities
    d = DiscretizedLogisticDistribution(torch.tensor(0.4), torch.tensor(0.1), levels)
    samples = d.sample((20_000,))
    k = samples * (levels - 1)
    assert torch.allclose(k, k.round(), atol=1e-5) and samples.min() >= 0 and samples.max() <= 1
    freq = torch.bincount(k.round().long(), minlength=levels).double() / 20_000
    probs = d.log_prob(torch.arange(levels) / (levels - 1)).exp().double()
    # 5 binomial standard errors per level, + 1e-4 where that is ~0 (one stray draw: 5e-5)
    assert ((freq - probs).abs() <= 5 * (probs * (1 - probs) / 20_000).sqrt() + 1e-4).all()


def test_discretized_logistic_likelihood_shapes_and_edges():
    lik = DiscretizedLogistic(levels=256)
    out = torch.zeros(3, 2 * 4)
    out[:, :4] = 0.5  # loc
    d = lik(out)
    assert d.event_shape == (4,) and d.batch_shape == (3,)
    x = torch.tensor([[0.0, 1.0, 128 / 255, 3 / 255]]).expand(3, 4)
    # scale = softplus(0) + min_scale (in float32); the event sums the four pixels, edges
    # included; tolerances of four float32 pixels
    scale = (F.softplus(torch.tensor(0.0)) + 1e-3).item()
    expected = sum(mp_discretized_logistic_log_prob(v, 0.5, scale, 256) for v in x[0].tolist())
    torch.testing.assert_close(
        d.log_prob(x).double(),
        torch.full((3,), expected, dtype=D64),
        rtol=FLOAT32_RTOL,
        atol=4 * FLOAT32_ATOL,
    )


@pytest.mark.parametrize(
    "lik,x,message",
    [
        (Bernoulli(), [[0.0, 0.5, 1.0]], "set binarize to static or dynamic"),
        (ContinuousBernoulli(), [[0.0, 1.2]], r"values outside \[0.0, 1.0\]"),
        (Beta(), [[-0.1, 0.5]], r"values outside \[0.0, 1.0\]"),
        (DiscretizedLogistic(levels=256), [[0.5001, 0.2]], "not multiples of 1/255"),
        (DiscretizedLogistic(levels=17), [[3 / 255]], "not multiples of 1/16"),
        (Gaussian(0.1), [[math.nan]], "NaN or infinite"),
    ],
)
def test_out_of_support_data_name_the_likelihood_range_and_fix(lik, x, message):
    with pytest.raises(UsageError, match=message) as err:
        lik.check_data(torch.tensor(x))
    assert f"the {lik.name} likelihood needs" in str(err.value)
    assert "observed range" in str(err.value)


def test_in_support_data_are_accepted():
    Bernoulli().check_data(torch.tensor([[0.0, 1.0]]))
    DiscretizedLogistic(levels=256).check_data(torch.arange(256.0)[None] / 255)
    Beta().check_data(torch.tensor([[0.0, 1.0, 0.3]]))


def test_registry_and_configs_round_trip():
    assert sorted(LIKELIHOODS) == [
        "bernoulli",
        "beta",
        "continuous-bernoulli",
        "discretized-logistic",
        "gaussian",
        "laplace",
    ]
    for lik in (
        Gaussian(0.2),
        Gaussian("per-pixel"),
        Laplace("predicted"),
        Beta(eps=0.01),
        DiscretizedLogistic(levels=17),
        ContinuousBernoulli(),
    ):
        assert get_likelihood(**lik.config()).config() == lik.config()
    with pytest.raises(UsageError, match="valid names: bernoulli, beta"):
        get_likelihood("poisson")
    for sigma in (0.0, -1.0, 1e-30, 1e20, math.inf, math.nan):
        with pytest.raises(UsageError, match=r"the scale must be a number in \[0.0001, 10000\]"):
            Gaussian(sigma=sigma)
        with pytest.raises(UsageError, match=r"the scale must be a number in \[0.0001, 10000\]"):
            Laplace(scale=sigma)
    with pytest.raises(
        UsageError, match="neither a number nor one of shared, per-pixel, predicted"
    ):
        Gaussian(sigma="learned")
