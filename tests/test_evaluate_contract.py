"""What the evaluator computes from the weights, accepts, refuses and warns about.

Exactness against closed forms is in ``test_evaluate.py``; here: the streaming
statistics against a direct computation on the same weights, the per-point weights
against Pyro's joint weights, sites and plates the evaluator must count or ignore,
bad input, and non-finite weights.
"""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from linear_gaussian import D64, LinearGaussian, TwoLayer
from pyro.infer.importance import vectorized_importance_weights

from pyro_vae import VAE, TrainConfig, fit
from pyro_vae.evaluate import iwae_bounds, log_likelihood, log_weights
from pyro_vae.weights import Accumulator


@pytest.fixture
def lg():
    return LinearGaussian()


def direct_statistics(lw, ks):
    """log P(x), ELBO, ESS and L_k of all ``(K, N)`` log weights at once: the oracle."""
    k_all = lw.shape[0]
    w = torch.softmax(lw, 0)  # normalized weights per point
    bounds = []
    for k in ks:
        groups = lw[: (k_all // k) * k].reshape(-1, k, lw.shape[1])
        bounds.append((torch.logsumexp(groups, 1) - math.log(k)).mean(0))
    return torch.logsumexp(lw, 0) - math.log(k_all), lw.mean(0), 1 / (w**2).sum(0), bounds


def test_streaming_statistics_equal_the_direct_computation():
    g = torch.Generator().manual_seed(0)
    lw = torch.randn(103, 4, generator=g, dtype=D64) * 3
    ks = (1, 4, 10)
    log_px, elbo, ess, bounds = direct_statistics(lw, ks)
    for chunk in (1, 7, 50, 103):
        acc = Accumulator(103, ks)
        for part in lw.split(chunk):
            acc.add(part)
        got = acc.finish()
        torch.testing.assert_close(got[0], log_px)
        torch.testing.assert_close(got[1], elbo)
        torch.testing.assert_close(got[2], ess)
        for i in range(len(ks)):
            torch.testing.assert_close(got[3][i], bounds[i])


def test_per_point_weights_add_up_to_pyros_joint_weights(lg):
    x = lg.sample_x(5)
    pyro.set_rng_seed(3)
    ours = log_weights(lg.model, lg.mean_field_guide, x, num_samples=50, chunk_size=50)
    pyro.set_rng_seed(3)
    lg.mean_field_guide(x)  # our evaluator traces the guide once before sampling
    joint, _, _ = vectorized_importance_weights(
        lg.model, lg.mean_field_guide, x, num_samples=50, max_plate_nesting=1
    )
    torch.testing.assert_close(ours.sum(1), joint)


def test_vae_estimates_agree_with_independent_estimators(toy_binary):
    train, test = toy_binary
    vae = VAE(16, z_dim=2, hidden_dims=(32,))
    fit(vae, train, config=TrainConfig(epochs=10, batch_size=32, lr=1e-2), progress=False)
    pyro.set_rng_seed(4)
    res = iwae_bounds(vae.model, vae.guide, test, ks=(1, 5, 50), num_samples=500, chunk_size=64)
    assert res.log_px.shape == res.elbo.shape == res.ess.shape == (len(test),)
    # the same seed draws the same 500 weights per point, returned as one tensor: the
    # streamed statistics of a real VAE equal the direct ones on those weights, up to
    # float32 sums taken in another order (1e-5 relative)
    pyro.set_rng_seed(4)
    lw = log_weights(vae.model, vae.guide, test, num_samples=500, chunk_size=64)
    log_px, elbo, ess, bounds = direct_statistics(lw, (1, 5, 50))
    close = {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(res.log_px, log_px, **close)
    torch.testing.assert_close(res.elbo, elbo, **close)
    torch.testing.assert_close(res.ess, ess, **close)
    torch.testing.assert_close(res.bounds, torch.stack(bounds), **close)
    assert (ess < 0.9 * 500).all()  # unequal weights: not the trivial case ESS = K
    # the ELBO of the same samples agrees with Trace_ELBO's estimate (independent samples)
    from pyro_vae import mean_elbo

    trace_elbo = mean_elbo(vae.model, vae.guide, test, num_particles=500)
    assert abs(res.elbo.mean().item() - trace_elbo) < 0.05  # ~5 s.e. of 64 x 500 samples
    # the naive estimator with many prior samples agrees on this 2-D latent space
    naive = log_likelihood(vae.model, None, test, num_samples=20_000, proposal="prior")
    assert abs(naive.log_px.mean().item() - res.log_px.mean().item()) < 0.1


def test_particles_are_drawn_in_chunks(lg):
    calls = []

    def counting_guide(x):
        calls.append(1)
        lg.mean_field_guide(x)

    x = lg.sample_x(4)
    log_likelihood(lg.model, counting_guide, x, num_samples=1000, chunk_size=64)
    assert len(calls) == 1 + math.ceil(1000 / 64)  # one inspection pass, then 16 chunks


# --- sites the evaluator counts or ignores ------------------------------------------


def test_sites_named_with_underscores_count(lg):
    x = lg.sample_x(4)

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("_z", dist.Normal(torch.zeros(lg.d, dtype=D64), 1.0).to_event(1))
            pyro.deterministic("_mean", z @ lg.W.T)
            pyro.sample("_x", dist.Normal(z @ lg.W.T + lg.b, lg.s).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("_z", dist.MultivariateNormal(lg.posterior_mean(x), lg.cov))

    res = log_likelihood(model, guide, x, num_samples=10)
    torch.testing.assert_close(res.log_px, lg.exact_log_px(x), atol=1e-9, rtol=0)


def test_deterministic_sites_outside_the_data_plate_are_ignored(lg):
    x = lg.sample_x(3)

    def model(x):
        pyro.deterministic("w_norm", lg.W.norm())
        lg.model(x)

    res = log_likelihood(model, lg.exact_guide, x, num_samples=5)
    torch.testing.assert_close(res.log_px, lg.exact_log_px(x), atol=1e-9, rtol=0)


# --- bad input -----------------------------------------------------------------------


def test_subsampled_data_plate_is_refused(lg):
    def model(x):
        with pyro.plate("data", x.shape[0], subsample_size=2, dim=-1) as idx:
            z = pyro.sample("z", dist.Normal(torch.zeros(lg.d, dtype=D64), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ lg.W.T + lg.b, lg.s).to_event(1), obs=x[idx])

    with pytest.raises(ValueError, match="subsamples 2 of 5 data points"):
        log_likelihood(model, None, lg.sample_x(5), num_samples=4, proposal="prior")


def test_bad_arguments(lg):
    x = lg.sample_x(3)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="num_samples must be a positive integer"):
            log_likelihood(lg.model, lg.exact_guide, x, num_samples=bad)
    assert log_likelihood(lg.model, lg.exact_guide, x, num_samples=3.0).num_samples == 3
    with pytest.raises(ValueError, match="unknown proposal"):
        log_likelihood(lg.model, lg.exact_guide, x, proposal="posterior")
    with pytest.raises(ValueError, match=r"every k in ks must lie in \[1, num_samples=10\]"):
        iwae_bounds(lg.model, lg.exact_guide, x, ks=(1, 50), num_samples=10)


def test_model_without_data_plate_is_refused():
    def model(x):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0).expand(x.shape).to_event(1), obs=x)

    def guide(x):
        pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"no pyro.plate\('data', N\) found"):
        log_likelihood(model, guide, torch.zeros(3), num_samples=5)


def test_guide_missing_a_latent_site_is_refused():
    m = TwoLayer()

    def partial_guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z1", dist.Normal(torch.zeros(2, dtype=D64), 1.0).to_event(1))

    with pytest.raises(ValueError, match="the guide has no site for the model's latent site"):
        log_likelihood(m.model, partial_guide, m.marginal.sample((2,)), num_samples=5)


def test_global_latent_is_refused():
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x), dim=-1):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    with pytest.raises(ValueError, match="model site 'mu' is outside the 'data' plate"):
        log_likelihood(model, None, torch.zeros(3), num_samples=5, proposal="prior")


# --- non-finite weights --------------------------------------------------------------


@pytest.mark.parametrize(
    "value,message",
    [
        (-math.inf, "every importance weight is zero"),
        (-math.inf, "the ELBO is -inf"),
        (math.nan, "NaN"),
    ],
)
def test_non_finite_weights_warn(value, message):
    def model(x):
        with pyro.plate("data", len(x), dim=-1):
            pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.factor("f", torch.full((len(x),), value))

    def guide(x):
        with pyro.plate("data", len(x), dim=-1):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    with pyro.validation_enabled(False), pytest.warns(UserWarning) as record:
        log_likelihood(model, guide, torch.zeros(3), num_samples=5)
    assert any(message in str(w.message) for w in record)
    assert all(w.filename == __file__ for w in record)  # points at the caller


def test_finite_weights_do_not_warn(lg):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        log_likelihood(lg.model, lg.mean_field_guide, lg.sample_x(3), num_samples=20)


def test_a_tail_of_equal_weights_has_khat_minus_infinity():
    # a discrete posterior (a VQ-VAE's codes): the weights above the cutoff are tied, here
    # 111 of the 213 largest of K = 5,000 at one value and the rest at another, where
    # Pyro's fit divides by zero; the tail has zero width, k -> -inf, as for Q = P(z|X)
    from pyro_vae.weights import pareto_khat, tail_size

    m = tail_size(5000)
    two_levels = torch.tensor([0.0] * 111 + [-2.3263343962298677e-07] * (m + 1 - 111), dtype=D64)
    three = torch.stack([two_levels, two_levels - 3.0, torch.full((m + 1,), -1.0, dtype=D64)], 1)
    khat = pareto_khat(three, 5000).tolist()  # shifting the weights changes nothing
    assert khat[:2] == [-math.inf, -math.inf]
    assert math.isnan(khat[2])  # all tied: no weight above the cutoff, nothing to fit


def test_the_streamed_tail_is_the_largest_weights_and_khat_follows_pyros_fit():
    from pyro.ops.stats import fit_generalized_pareto

    from pyro_vae.weights import pareto_khat, tail_size

    g = torch.Generator().manual_seed(1)
    lw = torch.randn(500, 3, generator=g, dtype=D64) * 2
    m = tail_size(500)
    assert m == math.ceil(3 * math.sqrt(500))  # 3 sqrt(K) < K / 5 from K = 225
    direct = pareto_khat(lw, 500)
    for chunk in (1, 33, 500):
        acc = Accumulator(500, (), khat=True)
        for part in lw.split(chunk):
            acc.add(part)
        torch.testing.assert_close(acc.top, lw.topk(m + 1, dim=0).values)
        torch.testing.assert_close(acc.finish()[4], direct)
    # by hand for point 0: the m weights above the (m + 1)-th largest, relative to the max
    top = lw[:, 0].sort(descending=True).values[: m + 1] - lw[:, 0].max()
    k, _ = fit_generalized_pareto(top[:m].exp() - top[m].exp())
    assert float(direct[0]) == pytest.approx(k)
