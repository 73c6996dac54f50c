"""The importance-sampling evaluator against exact answers.

Linear-Gaussian models have a closed-form marginal, posterior, ELBO and weight
moments (``tests/linear_gaussian.py``), so the estimator is tested exactly where the
maths gives an answer and within named, seeded tolerances where it is statistical.
What the evaluator accepts, refuses and warns about is in ``test_evaluate_contract.py``.
"""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from linear_gaussian import (
    D64,
    LinearGaussian,
    TwoLayer,
    gaussian_kl,
    gaussian_weight_moment,
    log_weight_variance,
)
from pyro.infer import RenyiELBO

from pyro_vae.evaluate import iwae_bounds, log_likelihood

#: standard errors allowed between a Monte Carlo estimate and its closed form
NUM_SE = 5


@pytest.fixture
def lg():
    return LinearGaussian()


@pytest.mark.parametrize("num_samples", [1, 7, 100])
def test_exact_posterior_gives_exact_log_px_and_elbo_for_every_k(lg, num_samples):
    x = lg.sample_x(5)
    exact = lg.exact_log_px(x)
    result = log_likelihood(lg.model, lg.exact_guide, x, num_samples=num_samples)
    torch.testing.assert_close(result.log_px, exact, atol=1e-9, rtol=0)
    torch.testing.assert_close(result.elbo, exact, atol=1e-9, rtol=0)  # KL(q || p(z|x)) = 0
    # every weight equals p(x): the effective sample size is all K samples
    torch.testing.assert_close(result.ess, torch.full((5,), float(num_samples), dtype=D64))


#: max over 8 points of |estimate - exact|, seed 0; about 2x the worst of seeds 0-4.
#: The mean-field proposal is narrower than the correlated posterior, so the weights
#: are heavy-tailed and convergence is slow (the KL below is 0.19 nats).
MEAN_FIELD_TOLERANCE = {10: 1.0, 100: 0.45, 1000: 0.35, 10000: 0.15}


def test_mean_field_guide_converges_to_exact_log_px():
    lg = LinearGaussian(collinear=0.3)
    x = lg.sample_x(8)
    exact = lg.exact_log_px(x)
    kl = lg.mean_field_kl()  # KL(q || p(z|x)) of the diagonal q, the same for every x
    assert 0.15 < kl < 0.25
    errors = {}
    for k, tol in MEAN_FIELD_TOLERANCE.items():
        pyro.set_rng_seed(0)
        est = log_likelihood(lg.model, lg.mean_field_guide, x, num_samples=k)
        errors[k] = (est.log_px - exact).abs().max().item()
        assert errors[k] < tol, (k, errors[k])
    assert errors[10000] < errors[100] < errors[10]
    # with K = 10,000 the mean log weight is a precise ELBO: log p(x) - KL, 0.01 nats
    assert abs((exact - est.elbo).mean().item() - kl.item()) < 0.01


def test_elbo_l1_and_one_sample_estimate_against_the_closed_form_elbo():
    # ELBO = log p(x) - KL(q || p(z|x)) exactly; the per-point ELBO, L_1 and the K = 1
    # estimate of log P(x) all estimate it, with standard errors from the closed-form
    # variance of one log weight
    lg = LinearGaussian(collinear=0.3)
    mf_cov = torch.diag(lg.mean_field_scale**2)
    x = lg.sample_x(6)
    exact_elbo = lg.exact_log_px(x) - lg.mean_field_kl()
    post = lg.posterior_mean(x)
    sd_one = log_weight_variance(post, mf_cov, post, lg.precision).sqrt()  # (N,), one weight
    pyro.set_rng_seed(0)
    res = iwae_bounds(lg.model, lg.mean_field_guide, x, ks=(1, 10), num_samples=20_000)
    tol = NUM_SE * sd_one / math.sqrt(20_000)
    assert ((res.elbo - exact_elbo).abs() <= tol).all(), (res.elbo - exact_elbo, tol)
    assert ((res.bounds[0] - exact_elbo).abs() <= tol).all(), (res.bounds[0] - exact_elbo, tol)
    # L_10 sits above the ELBO by more than the noise (Burda et al., theorem 1)
    assert (res.bounds[1] - res.elbo > tol).all()
    # one sample per point: log P(x) is a single log weight, unbiased for the ELBO;
    # averaged over 2,000 points its error is below 5 s.e. of that mean
    many = lg.sample_x(2000, seed=2)
    one = log_likelihood(lg.model, lg.mean_field_guide, many, num_samples=1)
    target = lg.exact_log_px(many) - lg.mean_field_kl()
    sd_one = log_weight_variance(post[0], mf_cov, post[0], lg.precision).sqrt().item()
    assert abs((one.log_px - target).mean().item()) < NUM_SE * sd_one / math.sqrt(2000)


def test_poor_guide_elbo_and_log_px_against_the_exact_values():
    # a deliberately poor guide, N(posterior mean, 0.3^2 I), wider than the posterior
    # (standard deviations 0.09 to 0.25 along its axes): an ELBO gap of 4.6 nats
    lg = LinearGaussian(d=3, dim_x=6, s=0.3, seed=2)
    x = lg.sample_x(20)
    q_cov = 0.3**2 * torch.eye(3, dtype=D64)

    def wide_guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(lg.posterior_mean(x), 0.3).to_event(1))

    pyro.set_rng_seed(0)
    k = 5000
    res = log_likelihood(lg.model, wide_guide, x, num_samples=k)
    exact = lg.exact_log_px(x)
    post = lg.posterior_mean(x)
    kl = gaussian_kl(post, q_cov, post, lg.cov)  # the same for every point
    assert kl.min() > 4.0
    se_elbo = (log_weight_variance(post, q_cov, post, lg.precision) / k).sqrt()
    assert ((res.elbo - (exact - kl)).abs() <= NUM_SE * se_elbo).all()
    # log (1/K) sum w: by the delta method its standard error is ((rho - 1) / K)^1/2,
    # with rho = E[w^2] / E[w]^2 = 3.8 here (finite: q is wider than the posterior)
    rho = gaussian_weight_moment(2, post[0], q_cov, post[0], lg.cov).item()
    se_log_px = math.sqrt((rho - 1) / k)
    err = res.log_px - exact
    assert (err.abs() <= NUM_SE * se_log_px).all(), err
    assert abs(err.mean().item()) <= NUM_SE * se_log_px / math.sqrt(20), err.mean()


def test_effective_sample_size_against_the_closed_form():
    # 1-D: z ~ N(0, 1), x | z ~ N(z + b, 0.5^2); posterior N(0.8 (x - b), 0.2). Guide
    # N(0.4 (x - b) + 0.2, 0.6^2): off by a different amount at each point. As K grows
    # ESS / K -> E[w]^2 / E[w^2] = 1 / m_2, with m_n = E_q[(p(z|x) / q)^n] closed form
    lg = LinearGaussian(W=torch.ones(1, 1, dtype=D64), s=0.5)
    x = lg.b + torch.tensor([-1.5, 0.0, 0.7, 2.0], dtype=D64).unsqueeze(-1)
    post = lg.posterior_mean(x)
    q_loc, q_scale = 0.5 * post + 0.2, 0.6

    def guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(q_loc, q_scale).to_event(1))

    k = 20_000
    pyro.set_rng_seed(0)
    res = log_likelihood(lg.model, guide, x, num_samples=k)
    q_cov = torch.full((1, 1), q_scale**2, dtype=D64)
    m2, m3, m4 = (
        torch.stack(
            [
                gaussian_weight_moment(n, q, q_cov, p, lg.cov)
                for q, p in zip(q_loc, post, strict=True)
            ]
        )
        for n in (2, 3, 4)
    )
    # ESS / K = A^2 / B with A, B the sample means of w and w^2 (w / p(x)): delta method
    # with Var A = (m2 - 1) / K, Var B = (m4 - m2^2) / K, Cov = (m3 - m2) / K; the
    # O(1/K) bias is far below this standard error at K = 20,000
    var = (4 / m2**2 * (m2 - 1) - 4 / m2**3 * (m3 - m2) + (m4 - m2**2) / m2**4) / k
    expected = 1 / m2
    assert expected.max() - expected.min() > 0.4  # points with very different ESS
    err = (res.ess / k - expected).abs()
    assert (err <= NUM_SE * var.sqrt()).all(), (res.ess / k, expected, var.sqrt())


@pytest.mark.parametrize("k", [2, 5, 50])
def test_iwae_bound_agrees_with_renyi_elbo(lg, k):
    x = lg.sample_x(4)

    def poor_guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(lg.posterior_mean(x) + 0.3, 0.5).to_event(1))

    pyro.set_rng_seed(0)
    ours = iwae_bounds(lg.model, poor_guide, x, ks=(k,), num_samples=400 * k)
    ours = ours.bounds[0].sum().item()
    renyi = RenyiELBO(alpha=0.0, num_particles=k, vectorize_particles=True, max_plate_nesting=1)
    draws = torch.tensor([-renyi.loss(lg.model, poor_guide, x) for _ in range(400)])
    sem = draws.std().item() / math.sqrt(len(draws))
    # independent samples, both estimating sum_i L_k(x_i) from 400 groups of k:
    # 5 standard errors of one side (about 3.5 of the difference)
    assert abs(ours - draws.mean().item()) < 5 * sem, (ours, draws.mean().item(), sem)
    assert ours < lg.exact_log_px(x).sum().item()  # a bound below log p(x)


def test_two_latent_sites_against_the_exact_marginal():
    m = TwoLayer()
    x = m.marginal.sample((6,))
    exact = m.marginal.log_prob(x)
    res = log_likelihood(m.model, m.exact_guide, x, num_samples=64)
    torch.testing.assert_close(res.log_px, exact, atol=1e-8, rtol=0)
    # the naive estimator from the prior is unbiased in P(x) but needs many samples
    pyro.set_rng_seed(0)
    naive = log_likelihood(m.model, None, x, num_samples=200_000, proposal="prior")
    assert (naive.log_px - exact).abs().max() < 0.1  # 0.1 nats: about 5x the spread seen


@pytest.mark.parametrize("data_dim,repeat_dim", [(-1, -2), (-2, -1)])
def test_nested_plate_inside_the_data_plate(data_dim, repeat_dim):
    s, m, n = 0.5, 3, 7

    def model(x):  # z_i shared by the m observations of point i
        with pyro.plate("data", n, dim=data_dim):
            z = pyro.sample("z", dist.Normal(torch.zeros((), dtype=D64), 1.0))
            with pyro.plate("repeats", m, dim=repeat_dim):
                pyro.sample("x", dist.Normal(z, s), obs=x)

    def guide(x):  # exact posterior
        precision = 1 + m / s**2
        with pyro.plate("data", n, dim=data_dim):
            total = x.sum(0) if data_dim == -1 else x.sum(-1, keepdim=True)  # (n,) or (n, 1)
            pyro.sample("z", dist.Normal(total / s**2 / precision, precision**-0.5))

    x_points = torch.randn(n, m, dtype=D64)  # (point, repeat)
    x = x_points.T if data_dim == -1 else x_points  # data dim last, or second to last
    cov = s**2 * torch.eye(m, dtype=D64) + 1
    exact = dist.MultivariateNormal(torch.zeros(m, dtype=D64), cov).log_prob(x_points)
    res = log_likelihood(model, guide, x, num_samples=30)
    assert res.log_px.shape == (n,)
    torch.testing.assert_close(res.log_px, exact, atol=1e-9, rtol=0)


def test_masked_observations_drop_out(lg):
    x = lg.sample_x(6)
    observed = torch.tensor([True, False, True, True, False, True])

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(lg.d, dtype=D64), 1.0).to_event(1))
            with pyro.poutine.mask(mask=observed):
                pyro.sample("x", dist.Normal(z @ lg.W.T + lg.b, lg.s).to_event(1), obs=x)

    def guide(x):  # exact posterior where observed, the prior where masked
        with pyro.plate("data", x.shape[0], dim=-1):
            loc = torch.where(observed[:, None], lg.posterior_mean(x), 0.0)
            cov = torch.where(observed[:, None, None], lg.cov, torch.eye(lg.d, dtype=D64))
            pyro.sample("z", dist.MultivariateNormal(loc, cov))

    res = log_likelihood(model, guide, x, num_samples=20)
    exact = torch.where(observed, lg.exact_log_px(x), 0.0)  # a masked point has P(x) = 1
    torch.testing.assert_close(res.log_px, exact, atol=1e-9, rtol=0)


def test_label_observations_against_quadrature():
    w = torch.tensor([2.0, -1.0, 0.5], dtype=D64)
    c = torch.tensor([0.0, 0.5, -0.5], dtype=D64)
    y = torch.tensor([0, 1, 2, 0, 2])

    def model(y):
        with pyro.plate("data", len(y), dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros((), dtype=D64), 1.0))
            pyro.sample("y", dist.Categorical(logits=z.unsqueeze(-1) * w + c), obs=y)

    def guide(y):
        with pyro.plate("data", len(y), dim=-1):
            pyro.sample("z", dist.Normal(torch.zeros((), dtype=D64), 1.2))

    nodes, weights = np.polynomial.hermite_e.hermegauss(80)  # for the weight exp(-z^2 / 2)
    probs = torch.softmax(torch.tensor(nodes)[:, None] * w + c, -1)  # (80, 3)
    exact = torch.log(
        (torch.tensor(weights)[:, None] * probs[:, y]).sum(0) / math.sqrt(2 * math.pi)
    )
    pyro.set_rng_seed(0)
    for proposal in ("guide", "prior"):
        res = log_likelihood(model, guide, y, num_samples=20_000, proposal=proposal)
        assert (res.log_px - exact).abs().max() < 0.01  # 0.01 nats at K = 20,000


def test_conditional_model_gives_log_p_y_given_x():
    """z ~ N(0, I), y | z, x ~ N(W z + A x, s^2 I): log p(y|x) = log N(y; A x, W W^T + s^2 I)."""
    g = torch.Generator().manual_seed(5)
    W = torch.randn(3, 2, generator=g, dtype=D64)
    A = torch.randn(3, 4, generator=g, dtype=D64)
    s = 0.3
    precision = torch.eye(2, dtype=D64) + W.T @ W / s**2
    cov = torch.linalg.inv(precision)

    def model(x, y):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=D64), 1.0).to_event(1))
            pyro.sample("y", dist.Normal(z @ W.T + x @ A.T, s).to_event(1), obs=y)

    def guide(x, y):  # exact posterior p(z | x, y)
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.MultivariateNormal((y - x @ A.T) @ W / s**2 @ cov, cov))

    x = torch.randn(5, 4, generator=g, dtype=D64)
    y = torch.randn(5, 3, generator=g, dtype=D64)
    marginal = dist.MultivariateNormal(x @ A.T, W @ W.T + s**2 * torch.eye(3, dtype=D64))
    res = log_likelihood(model, guide, x, y, num_samples=16)
    torch.testing.assert_close(res.log_px, marginal.log_prob(y), atol=1e-9, rtol=0)


# --- Pareto k-hat ------------------------------------------------------------------------

#: how far the mean k-hat of 8 points, each from K = 5000 weights, may lie from its
#: closed form (a k-hat from ~200 tail weights has a standard error near 0.08)
KHAT_TOLERANCE = 0.1


def _scaled_posterior_guide(lg, factor):
    def guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.MultivariateNormal(lg.posterior_mean(x), lg.cov * factor**2))

    return guide


@pytest.mark.parametrize("factor", [0.2, 0.6, 0.8])
def test_pareto_khat_of_a_narrowed_posterior_has_its_closed_form(lg, factor):
    """Proposal N(m, f^2 S) for a posterior N(m, S) in d = 2 dimensions: with
    u = (z - m)^T S^-1 (z - m) / f^2 ~ chi2_2 (an exponential of mean 2) under the
    proposal, log w = u (1 - f^2) / 2 + const, so P(w > t) ~ t^(-1 / (1 - f^2)): the
    weights are exactly Pareto-tailed with shape k = 1 - f^2."""
    x = lg.sample_x(8)
    pyro.set_rng_seed(5)
    res = log_likelihood(lg.model, _scaled_posterior_guide(lg, factor), x, num_samples=5000)
    assert float(res.khat.mean()) == pytest.approx(1 - factor**2, abs=KHAT_TOLERANCE)
    if factor == 0.2:  # k = 0.96: every point is flagged
        assert (res.khat > 0.7).all()


def test_pareto_khat_is_low_for_the_posterior_and_a_wider_proposal(lg):
    x = lg.sample_x(8)
    pyro.set_rng_seed(6)
    exact = log_likelihood(lg.model, lg.exact_guide, x, num_samples=1000).khat
    assert (exact == -math.inf).all()  # equal weights: a tail of zero width
    wide = log_likelihood(lg.model, _scaled_posterior_guide(lg, 1.5), x, num_samples=5000).khat
    assert (wide < 0).all()  # bounded weights: a negative shape
    few = log_likelihood(lg.model, lg.mean_field_guide, x, num_samples=20).khat
    assert torch.isnan(few).all()  # 4 tail weights of 20 are too few to fit
