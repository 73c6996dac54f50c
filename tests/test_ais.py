"""Annealed importance sampling and BDMC against closed-form marginals.

The oracles are the linear-Gaussian models of ``linear_gaussian.py``: one latent layer
(``log p(x) = log N(x; b, W W^T + s^2 I)``) and two (``TwoLayer.marginal``). Every
statistical check fixes its seed and names its tolerance.
"""

import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from linear_gaussian import D64, LinearGaussian, TwoLayer

from pyro_vae import distributed
from pyro_vae.ais import (
    TARGET_ACCEPT,
    ais_dataset,
    annealed_importance_sampling,
    bdmc,
    bdmc_dataset,
    check,
    schedule,
    simulate,
)

#: a setting that AIS reaches the marginal with on these small models (chains are
#: batched, so 32 cost little more than 8)
FAST = dict(num_steps=300, num_chains=32, leapfrog_steps=5)
#: mean error over 8 points, in nats, that AIS at FAST must stay within (measured at
#: most 0.06; the chains' log weights spread by 0.2 to 1.3 nats)
MEAN_TOLERANCE = 0.1
#: the largest error of one point, in nats (measured at most 0.3)
POINT_TOLERANCE = 0.4


@pytest.fixture
def lg():
    return LinearGaussian(d=2, dim_x=4, s=0.5, collinear=0.5)


def test_sigmoid_schedule_runs_from_0_to_1_symmetric_with_small_end_steps():
    betas = schedule(100)
    assert betas[0] == 0 and betas[-1] == 1
    steps = betas.diff()
    assert (steps > 0).all()
    torch.testing.assert_close(betas + betas.flip(0), torch.ones(101, dtype=D64))
    # sigmoid(4 (2t/T - 1)) rescaled: on a fine grid the middle step over the first is
    # sigmoid'(0) / sigmoid'(-4) = 0.25 / (s(1 - s)) with s = sigmoid(-4)
    s = 1 / (1 + math.exp(4))
    fine = schedule(10_000).diff()
    assert fine[5000] / fine[0] == pytest.approx(0.25 / (s * (1 - s)), rel=0.01)
    torch.testing.assert_close(
        schedule(4, "linear"), torch.tensor([0, 0.25, 0.5, 0.75, 1], dtype=D64)
    )


@pytest.mark.parametrize("init", ["guide", "prior"])
def test_ais_reaches_the_exact_marginal_of_a_linear_gaussian(lg, init):
    x = lg.sample_x(8)
    pyro.set_rng_seed(0)
    guide = lg.mean_field_guide if init == "guide" else None
    res = annealed_importance_sampling(lg.model, guide, x, init=init, **FAST)
    error = res.log_px - lg.exact_log_px(x)
    assert abs(float(error.mean())) < MEAN_TOLERANCE
    assert float(error.abs().max()) < POINT_TOLERANCE
    assert res.log_weights.shape == (32, 8)
    assert res.acceptance.shape == res.step_size.shape == (8,)


def test_ais_reaches_the_exact_marginal_of_two_latent_layers():
    model = TwoLayer()
    pyro.set_rng_seed(1)
    x = model.marginal.sample((8,))
    res = annealed_importance_sampling(model.model, None, x, init="prior", **FAST)
    error = res.log_px - model.marginal.log_prob(x)
    assert abs(float(error.mean())) < MEAN_TOLERANCE
    assert float(error.abs().max()) < POINT_TOLERANCE


def test_ais_from_the_exact_posterior_returns_the_exact_value_in_every_chain(lg):
    # f_t = p(z|x) p(x)^beta_t: every increment is (beta_t - beta_{t-1}) log p(x)
    x = lg.sample_x(5)
    res = annealed_importance_sampling(
        lg.model, lg.exact_guide, x, num_steps=10, num_chains=4, leapfrog_steps=3
    )
    exact = lg.exact_log_px(x)
    torch.testing.assert_close(res.log_weights, exact.expand(4, 5), rtol=0, atol=1e-10)
    # two latent layers: the guide q(z1|x) q(z2|z1, x) is traced again at every step
    model = TwoLayer()
    pyro.set_rng_seed(1)
    x = model.marginal.sample((3,))
    res = annealed_importance_sampling(
        model.model, model.exact_guide, x, num_steps=10, num_chains=4, leapfrog_steps=3
    )
    torch.testing.assert_close(
        res.log_weights, model.marginal.log_prob(x).expand(4, 3), rtol=0, atol=1e-9
    )
    assert (res.acceptance > 0.3).all()  # and the chains moved


def test_the_kept_guide_distribution_gives_what_tracing_the_guide_gives(lg, monkeypatch):
    from pyro_vae.annealing import Annealer

    x = lg.sample_x(3)
    settings = dict(num_steps=15, num_chains=4, leapfrog_steps=3, seeds=[1, 2, 3])
    kept = annealed_importance_sampling(lg.model, lg.mean_field_guide, x, **settings)
    monkeypatch.setattr(Annealer, "_keep_guide", lambda self, values: None)
    traced = annealed_importance_sampling(lg.model, lg.mean_field_guide, x, **settings)
    torch.testing.assert_close(kept.log_weights, traced.log_weights, rtol=0, atol=1e-10)


def test_ais_beats_importance_sampling_from_a_poor_guide(lg):
    """A guide far too narrow and off-centre: IS at K = 1000 stays well below the truth,
    AIS from the same guide does not."""
    from pyro_vae.evaluate import log_likelihood

    def poor_guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            loc = lg.posterior_mean(x) + 0.3
            pyro.sample("z", dist.Normal(loc, 0.3 * lg.mean_field_scale).to_event(1))

    x = lg.sample_x(8)
    exact = lg.exact_log_px(x)
    pyro.set_rng_seed(2)
    is_error = log_likelihood(lg.model, poor_guide, x, num_samples=1000).log_px - exact
    ais_error = annealed_importance_sampling(lg.model, poor_guide, x, **FAST).log_px - exact
    assert float(is_error.mean()) < -1.0
    assert abs(float(ais_error.mean())) < MEAN_TOLERANCE


def test_constrained_latents_move_in_unconstrained_space_with_the_jacobian(lg):
    """z ~ LogNormal(0, 1) and x ~ N(W log z + b, s^2): the marginal of x is the
    linear-Gaussian one. Without the Jacobian of exp in the HMC target, AIS would
    anneal towards the wrong density."""

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.LogNormal(torch.zeros(2, dtype=D64), 1.0).to_event(1))
            loc = z.log() @ lg.W.T + lg.b
            pyro.sample("x", dist.Normal(loc, lg.s).to_event(1), obs=x)

    x = lg.sample_x(6)
    pyro.set_rng_seed(3)
    res = annealed_importance_sampling(model, None, x, init="prior", **FAST)
    error = res.log_px - lg.exact_log_px(x)
    assert abs(float(error.mean())) < MEAN_TOLERANCE
    assert float(error.abs().max()) < POINT_TOLERANCE


def test_step_size_adaptation_reaches_its_target_on_a_gaussian(lg):
    x = lg.sample_x(4)
    pyro.set_rng_seed(4)
    res = annealed_importance_sampling(
        lg.model, lg.mean_field_guide, x, num_steps=1000, num_chains=16, leapfrog_steps=5
    )
    # the mean acceptance settles on the target once the step size has climbed from
    # 0.01 (about 20 of the 999 transitions)
    assert res.acceptance.tolist() == pytest.approx([TARGET_ACCEPT] * 4, abs=0.02)
    assert (res.step_size > 0.1).all()
    fixed = annealed_importance_sampling(
        lg.model,
        lg.mean_field_guide,
        x,
        num_steps=100,
        num_chains=16,
        leapfrog_steps=5,
        adapt_rate=0.0,
    )
    assert (fixed.acceptance > 0.95).all()  # steps far below the posterior's scale


@pytest.mark.parametrize("init", ["prior", "guide"])
def test_bdmc_brackets_the_exact_value_and_narrows_as_t_grows(lg, init):
    x = lg.sample_x(24)
    widths = []
    for steps in (5, 100):
        res = bdmc(
            lg.model,
            lg.mean_field_guide,
            x,
            init=init,
            num_steps=steps,
            num_chains=4,
            leapfrog_steps=5,
            seeds=range(24),
        )
        exact = lg.exact_log_px(res.data[-1])
        # stochastic bounds: they hold on average over points, up to noise
        assert float((res.lower - exact).mean()) < 0.02
        assert float((res.upper - exact).mean()) > -0.02
        widths.append(float(res.width.mean()))
    # five steps are far from the marginal: from the prior by nats, from the mean-field
    # guide (0.55 nats of KL from the posterior) by less
    assert widths[0] > (0.5 if init == "prior" else 0.1)
    assert widths[1] < widths[0] / 5


def test_simulated_data_follow_the_model(lg):
    """x from simulate has the linear-Gaussian marginal's mean and covariance."""
    placeholder = torch.zeros(4000, 4, dtype=D64)
    observed, latents = simulate(lg.model, placeholder, seeds=range(4000))
    x, z = observed["x"], latents["z"]
    assert x.shape == (4000, 4) and z.shape == (4000, 2)
    cov = lg.W @ lg.W.T + lg.s**2 * torch.eye(4, dtype=D64)
    # standard errors of sample means and covariances at n = 4000 are below 0.05
    torch.testing.assert_close(x.mean(0), lg.b, atol=0.1, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.25, rtol=0.05)
    residual = x - z @ lg.W.T - lg.b  # the observation noise alone
    assert float(residual.std()) == pytest.approx(lg.s, rel=0.05)
    # a point's draw does not depend on the others
    one, _ = simulate(lg.model, placeholder[:1], seeds=[7])
    torch.testing.assert_close(one["x"][0], x[7])


def test_a_points_results_do_not_depend_on_its_batch(lg):
    x = lg.sample_x(5)
    settings = dict(num_steps=20, num_chains=3, leapfrog_steps=2, seed=9)
    alone = ais_dataset(lg.model, lg.mean_field_guide, x, points_per_batch=1, **settings)
    together = ais_dataset(lg.model, lg.mean_field_guide, x, points_per_batch=4, **settings)
    torch.testing.assert_close(alone.log_weights, together.log_weights, rtol=0, atol=1e-12)
    seeds = [distributed.stream_seed(9, "ais", i) for i in (3, 4)]
    direct = annealed_importance_sampling(
        lg.model,
        lg.mean_field_guide,
        x[3:],
        num_steps=20,
        num_chains=3,
        leapfrog_steps=2,
        seeds=seeds,
    )
    torch.testing.assert_close(direct.log_px, alone.log_px[3:], rtol=0, atol=1e-12)
    b1 = bdmc_dataset(lg.model, None, x, init="prior", points_per_batch=2, **settings)
    b2 = bdmc_dataset(lg.model, None, x, init="prior", points_per_batch=5, **settings)
    for one, two in (
        (b1.upper, b2.upper),
        (b1.lower, b2.lower),
        (b1.forward.log_weights, b2.forward.log_weights),
        (b1.forward.acceptance, b2.forward.acceptance),
        (b1.reverse_acceptance, b2.reverse_acceptance),
    ):
        torch.testing.assert_close(one, two, rtol=0, atol=1e-12)
    torch.testing.assert_close(b1.data[0], b2.data[0])


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"num_steps": 0}, "num_steps must be a positive integer"),
        ({"num_chains": 0}, "num_chains must be a positive integer"),
        ({"leapfrog_steps": 0}, "leapfrog_steps must be a positive integer"),
        ({"num_steps": 2.5}, "num_steps must be a positive integer"),
        ({"step_size": 0.0}, r"step_size must lie in \(0, 1\)"),
        ({"step_size": 1.0}, r"step_size must lie in \(0, 1\)"),
        ({"adapt_rate": -0.1}, "adapt_rate must be finite and at least 0"),
        ({"init": "posterior"}, "unknown init"),
        ({"schedule_kind": "cosine"}, "unknown schedule"),
    ],
)
def test_bad_settings_are_refused(lg, settings, message):
    with pytest.raises(ValueError, match=message):
        annealed_importance_sampling(lg.model, lg.mean_field_guide, lg.sample_x(2), **settings)


def test_discrete_and_missing_latents_are_refused(lg):
    def mixture(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            c = pyro.sample("c", dist.Categorical(torch.ones(3) / 3))
            pyro.sample("x", dist.Normal(c.double().unsqueeze(-1), 1.0).to_event(1), obs=x)

    x = lg.sample_x(2)
    with pytest.raises(ValueError, match="latent site 'c' is discrete"):
        check(mixture, None, x, init="prior")
    with pytest.raises(ValueError, match="no latent sites"):

        def observed_only(x):
            with pyro.plate("data", x.shape[0], dim=-1):
                pyro.sample("x", dist.Normal(torch.zeros(4, dtype=D64), 1.0).to_event(1), obs=x)

        check(observed_only, None, x, init="prior")
    with pytest.raises(ValueError, match="init='guide' needs a guide"):
        check(lg.model, None, x)


# --- models beyond the one-plate Gaussian -------------------------------------------------


def test_a_data_plate_at_dim_2_with_the_pixels_in_a_plate_of_their_own(lg):
    """The same linear-Gaussian marginal, written with the data plate at dim -2 and one
    sample statement per pixel in a plate at dim -1."""

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-2):
            z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=D64), 1.0).to_event(1))
            loc = z @ lg.W.T + lg.b  # (..., N, 1, 4)
            with pyro.plate("pixels", 4, dim=-1):
                pyro.sample("x", dist.Normal(loc.squeeze(-2), lg.s), obs=x)

    x = lg.sample_x(6)
    pyro.set_rng_seed(5)
    res = annealed_importance_sampling(model, None, x, init="prior", **FAST)
    error = res.log_px - lg.exact_log_px(x)
    assert abs(float(error.mean())) < MEAN_TOLERANCE
    sandwich = bdmc(model, None, x, init="prior", seeds=range(6), **FAST)
    exact = lg.exact_log_px(sandwich.data[-1])
    # each simulated row belongs to the latents it was drawn with: else the reverse
    # chains would start far from the posterior and the upper bound fall below the truth
    assert sandwich.data[-1].shape == (6, 4)
    assert float((sandwich.lower - exact).mean()) < MEAN_TOLERANCE
    assert float((sandwich.upper - exact).mean()) > -MEAN_TOLERANCE


def test_a_simplex_latent_against_the_dirichlet_multinomial():
    """z ~ Dirichlet(alpha), five draws x_j ~ Categorical(z): log p(x) = log G(A) -
    log G(A + 5) + sum_k [log G(alpha_k + n_k) - log G(alpha_k)], A = sum alpha. The
    chains move over the 2 free coordinates of the 3-simplex."""
    alpha = torch.tensor([0.8, 1.5, 2.0], dtype=D64)

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Dirichlet(alpha))
            probs = z.unsqueeze(-2).expand(*z.shape[:-1], 5, 3)
            pyro.sample("x", dist.Categorical(probs=probs).to_event(1), obs=x)

    x = torch.tensor([[0, 0, 1, 2, 2], [1, 1, 1, 1, 0], [2, 2, 2, 2, 2]])
    counts = torch.nn.functional.one_hot(x, 3).sum(1).double()
    exact = (
        torch.lgamma(alpha.sum())
        - torch.lgamma(alpha.sum() + 5)
        + (torch.lgamma(alpha + counts) - torch.lgamma(alpha)).sum(-1)
    )
    pyro.set_rng_seed(6)
    res = annealed_importance_sampling(model, None, x, init="prior", **FAST)
    torch.testing.assert_close(res.log_px, exact, rtol=0, atol=POINT_TOLERANCE)


def test_a_constrained_latent_from_a_guide_of_the_same_support(lg):
    """z ~ LogNormal, x ~ N(W log z + b, s^2), and a log-normal guide from the
    mean-field posterior of log z: AIS from the guide reaches the marginal."""

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.LogNormal(torch.zeros(2, dtype=D64), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.log() @ lg.W.T + lg.b, lg.s).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            loc = lg.posterior_mean(x)
            pyro.sample("z", dist.LogNormal(loc, lg.mean_field_scale).to_event(1))

    def normal_guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(lg.posterior_mean(x), 1.0).to_event(1))

    x = lg.sample_x(6)
    pyro.set_rng_seed(7)
    res = annealed_importance_sampling(model, guide, x, **FAST)
    error = res.log_px - lg.exact_log_px(x)
    assert abs(float(error.mean())) < MEAN_TOLERANCE
    assert float(error.abs().max()) < POINT_TOLERANCE
    with pytest.raises(ValueError, match="the guide's site 'z' has support"):
        check(model, normal_guide, x)


def test_a_conditional_model_keeps_its_input_and_simulates_its_target(lg):
    """z ~ N(0, I), y | x, z ~ N(W z + A x + b, s^2): log p(y | x) = log N(y; A x + b,
    W W^T + s^2 I). BDMC simulates y for the given x."""
    a = torch.randn(4, 3, generator=torch.Generator().manual_seed(3), dtype=D64)

    def model(x, y):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=D64), 1.0).to_event(1))
            pyro.sample("y", dist.Normal(z @ lg.W.T + x @ a.T + lg.b, lg.s).to_event(1), obs=y)

    def exact(x, y):
        cov = lg.W @ lg.W.T + lg.s**2 * torch.eye(4, dtype=D64)
        return dist.MultivariateNormal(x @ a.T + lg.b, cov).log_prob(y)

    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(4), dtype=D64)
    y = lg.sample_x(6) + x @ a.T
    pyro.set_rng_seed(8)
    res = annealed_importance_sampling(model, None, x, y, init="prior", **FAST)
    assert abs(float((res.log_px - exact(x, y)).mean())) < MEAN_TOLERANCE
    sandwich = bdmc(model, None, x, y, init="prior", seeds=range(6), **FAST)
    sim_x, sim_y = sandwich.data
    assert sim_x is x and not torch.equal(sim_y, y)
    truth = exact(sim_x, sim_y)
    assert float((sandwich.lower - truth).mean()) < MEAN_TOLERANCE
    assert float((sandwich.upper - truth).mean()) > -MEAN_TOLERANCE


def test_a_divergent_trajectory_is_rejected_not_raised():
    """x ~ N(exp(50 z), 0.01): at step size 0.5 the leapfrog overflows; the chains
    reject those proposals and the run ends with finite weights."""

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal((50 * z).exp(), 0.01).to_event(1), obs=x)

    x = torch.ones(2, 1)  # float32: exp overflows from z = 1.8
    res = annealed_importance_sampling(
        model,
        None,
        x,
        init="prior",
        num_steps=20,
        num_chains=4,
        leapfrog_steps=5,
        step_size=0.5,
        adapt_rate=0.0,
    )
    assert torch.isfinite(res.log_px).all()
    assert (res.acceptance < 0.9).all()


def test_masked_latents_and_ragged_data_are_refused(lg):
    def masked(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            with poutine.mask(mask=torch.tensor([True, False])):
                z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=D64), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ lg.W.T + lg.b, lg.s).to_event(1), obs=x)

    x = lg.sample_x(2)
    with pytest.raises(ValueError, match="latent site 'z' is masked"):
        check(masked, None, x, init="prior")
    with pytest.raises(ValueError, match="different numbers of points"):
        check(lg.model, None, x, torch.zeros(3), init="prior")
    with pytest.raises(ValueError, match="tensors whose first dimension indexes"):
        check(lg.model, None, x, 1.0, init="prior")
