"""The gap decomposition against closed forms on a linear-Gaussian model.

For ``z ~ N(0, I)``, ``x | z ~ N(W z + b, s^2 I)`` the posterior is Gaussian with
precision ``Lambda = I + W^T W / s^2``, and the best diagonal Gaussian ``q*`` for a
point has the posterior mean and variances ``1 / Lambda_ii``. So, per point,

- approximation gap ``log p(x) - ELBO[q*] = KL(q* || p(z|x))``
  ``= (sum_i log Lambda_ii - log det Lambda) / 2``: zero when W has orthogonal columns;
- amortization gap ``ELBO[q*] - ELBO[q_enc] = KL(q_enc || p(z|x)) - KL(q* || p(z|x))``,

both in closed form for an affine encoder that is deliberately wrong.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from linear_gaussian import D64, LinearGaussian, gaussian_kl, log_weight_variance
from torch import nn

from pyro_vae import VAE, TrainConfig, fit
from pyro_vae.gaps import LocalGuide, decompose_gap, fit_local_guide
from pyro_vae.guides import DiagonalGaussian

#: SVI settings for q*. Adam with a constant step leaves q* jittering around the
#: optimum by a fraction of ``lr`` (doubling the steps does not shrink it); 1000
#: particles per step keep the scale's gradient noise small. 300 steps reach the
#: optimum from the wrong encoder below (about 1.4 away) with room to spare.
FIT = {"steps": 300, "lr": 0.02, "num_particles": 1000}
#: |fitted - closed-form| for the means and standard deviations of q*: the largest
#: errors over seeds 0-4 (model and SVI) and both models were 0.019 (means) and 0.009
#: (standard deviations); about 1.6x and 2x that.
LOC_TOL, SCALE_TOL = 0.03, 0.02
#: how far ELBO[q_fitted] may fall below ELBO[q*], in nats: the KL excess of the
#: fitted q* over the optimum was at most 0.001 over the same fits; 2x that.
Q_STAR_KL_SLACK = 0.002
#: importance samples per point for the gap estimates
NUM_SAMPLES = 40_000
#: standard errors allowed for a Monte Carlo estimate against its closed form
NUM_SE = 5


class AffineEncoder(nn.Module):
    """``loc = x A^T + a``, a fixed per-dimension ``scale``: the ``encoder(x)`` gaps.py needs."""

    def __init__(self, weight, bias, scale):
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone())
        self.scale = nn.Parameter(scale.clone())

    def forward(self, x):
        return x @ self.weight.T + self.bias, self.scale.expand(x.shape[0], -1)


class LinearGaussianVAE(nn.Module):
    """The linear-Gaussian model and an affine encoder as a VAE (model, guide, encoder)."""

    max_plate_nesting = 1

    def __init__(self, lg, encoder):
        super().__init__()
        self.lg = lg
        self.W = nn.Parameter(lg.W.clone())  # parameters, so that freezing is exercised
        self.b = nn.Parameter(lg.b.clone())
        self.encoder = encoder

    def guide_parts(self):
        """The diagonal Gaussian family over the affine encoder's ``(loc, scale)``."""
        return DiagonalGaussian(), self.encoder

    def model(self, x):
        pyro.module("lg_vae", self)
        with pyro.plate("data", x.shape[0], dim=-1):
            prior = dist.Normal(torch.zeros(self.W.shape[1], dtype=D64), 1.0).to_event(1)
            z = pyro.sample("z", prior)
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.lg.s).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("lg_encoder", self.encoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            loc, scale = self.encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def with_posterior_precision(precision, dim_x=5, s=0.8, seed=0):
    """A :class:`LinearGaussian` whose posterior precision is ``precision`` (2 x 2):
    ``W = Q R`` with orthonormal Q and ``R^T R = s^2 (precision - I)``."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim_x, 2, generator=g, dtype=D64))
    gram = s**2 * (precision - torch.eye(2, dtype=D64))
    W = q @ torch.linalg.cholesky(gram).mT
    return LinearGaussian(W=W, s=s, seed=seed)


def precision_with_correlation(r):
    """``Lambda`` with diagonal (2.5, 2) and correlation r: the mean-field optimum has
    standard deviations ``(2.5^-1/2, 2^-1/2)`` whatever r, and ``KL = -log(1 - r^2) / 2``."""
    a, e = 2.5, 2.0
    c = r * math.sqrt(a * e)
    return torch.tensor([[a, c], [c, e]], dtype=D64)


#: r = 0 (orthogonal columns: q* is the exact posterior) and r = 0.4, where the
#: importance weights of q* still have finite variance (|r| < 1/2) and KL = 0.087 nats
MODELS = {"orthogonal": 0.0, "correlated": 0.4}


def wrong_encoder(lg):
    """Half the posterior-mean map, shifted by 0.8, with fixed scales (0.3, 1.5)."""
    gain = lg.cov @ lg.W.T / lg.s**2  # (2, D): posterior mean = (x - b) gain^T
    return AffineEncoder(
        0.5 * gain, -0.5 * lg.b @ gain.T + 0.8, torch.tensor([0.3, 1.5], dtype=D64)
    )


def setup(r, seed=0):
    lg = with_posterior_precision(precision_with_correlation(r), seed=seed)
    return lg, LinearGaussianVAE(lg, wrong_encoder(lg)), lg.sample_x(6, seed=seed + 1)


def test_linear_gaussian_oracle_has_the_requested_posterior():
    lg = with_posterior_precision(precision_with_correlation(0.4))
    torch.testing.assert_close(lg.precision, precision_with_correlation(0.4))
    assert lg.mean_field_kl().item() == pytest.approx(-0.5 * math.log(1 - 0.4**2))
    # the posterior marginals are wider than the mean-field optimum by more than
    # twice the fit tolerance, so the q* checks below tell them apart
    assert (lg.cov.diagonal().sqrt() - lg.mean_field_scale).min() > 2 * SCALE_TOL


@pytest.mark.parametrize("name", MODELS)
def test_q_star_is_the_closed_form_mean_field_optimum(name):
    lg, vae, x = setup(MODELS[name])
    pyro.set_rng_seed(0)
    local = fit_local_guide(vae, x, **FIT)
    loc, scale = local.params()
    torch.testing.assert_close(loc, lg.posterior_mean(x), atol=LOC_TOL, rtol=0)
    torch.testing.assert_close(scale, lg.mean_field_scale.expand_as(scale), atol=SCALE_TOL, rtol=0)


def assert_within(actual, expected, tol, what):
    """``|actual - expected| <= tol`` elementwise; tol may differ per point."""
    err = (actual - expected).abs()
    assert (err <= tol).all(), f"{what}: errors {err.tolist()} above tolerances {tol}"


def encoder_q(vae, x):
    """The encoder's q as (loc ``(N, 2)``, covariance ``(2, 2)``): its scales are fixed."""
    with torch.no_grad():
        loc, scale = (t.detach() for t in vae.encoder(x))
    return loc, torch.diag(scale[0] ** 2)


@pytest.mark.parametrize("name", MODELS)
def test_both_gaps_against_their_closed_forms(name):
    lg, vae, x = setup(MODELS[name])
    exact = lg.exact_log_px(x)
    post_loc, mf_cov = lg.posterior_mean(x), torch.diag(lg.mean_field_scale**2)
    enc_loc, enc_cov = encoder_q(vae, x)
    kl_mf = lg.mean_field_kl()  # 0 for orthogonal columns
    kl_enc = gaussian_kl(enc_loc, enc_cov, post_loc, lg.cov)  # (N,)
    assert kl_enc.min() > 1.0  # a deliberately poor encoder: nats to recover

    pyro.set_rng_seed(0)
    g = decompose_gap(vae, x, **FIT, num_samples=NUM_SAMPLES)

    # Monte Carlo standard errors in closed form. Each ELBO is a mean of K log weights
    # (variance from log_weight_variance). log P(x) with q* as proposal has relative
    # weight variance rho - 1, rho = E[w^2] / E[w]^2 = (1 - r^2) / sqrt(1 - 4 r^2) for
    # this 2-D posterior, plus ~2 KL (chi^2 ~ 2 KL nearby) for a q* off by the slack.
    r = MODELS[name]
    se_enc = (log_weight_variance(enc_loc, enc_cov, post_loc, lg.precision) / NUM_SAMPLES).sqrt()
    se_opt = (log_weight_variance(post_loc, mf_cov, post_loc, lg.precision) / NUM_SAMPLES).sqrt()
    rho = (1 - r**2) / math.sqrt(1 - 4 * r**2)
    se_log_px = math.sqrt((rho - 1 + 2 * Q_STAR_KL_SLACK) / NUM_SAMPLES)
    # q* may sit above the optimum's KL by the slack: it only lowers ELBO[q*]
    tol_opt = NUM_SE * (se_opt + se_log_px) + Q_STAR_KL_SLACK

    assert_within(g.log_px, exact, NUM_SE * se_log_px, "log P(x)")
    assert_within(g.elbo_amortized, exact - kl_enc, NUM_SE * se_enc, "ELBO of the encoder")
    assert_within(g.elbo_optimal, exact - kl_mf, tol_opt, "ELBO of q*")
    assert_within(g.approximation_gap, kl_mf, tol_opt, "approximation gap")
    assert_within(g.amortization_gap, kl_enc - kl_mf, NUM_SE * se_enc + tol_opt, "amortization gap")
    assert g.steps == FIT["steps"] and g.num_samples == NUM_SAMPLES


def test_zero_steps_leave_q_star_at_the_encoder():
    # no fitting: q* is the encoder's q, so the amortization gap is zero
    lg, vae, x = setup(MODELS["correlated"])
    enc_loc, enc_cov = encoder_q(vae, x)
    post_loc = lg.posterior_mean(x)
    kl_enc = gaussian_kl(enc_loc, enc_cov, post_loc, lg.cov)
    se_enc = (log_weight_variance(enc_loc, enc_cov, post_loc, lg.precision) / 4000).sqrt()
    pyro.set_rng_seed(0)
    g = decompose_gap(vae, x, steps=0, num_samples=4000)
    assert_within(g.elbo_optimal, lg.exact_log_px(x) - kl_enc, NUM_SE * se_enc, "ELBO of q*")
    # two independent 4,000-sample ELBOs of the same q: 2^1/2 standard errors apart
    assert_within(g.amortization_gap, 0.0, NUM_SE * math.sqrt(2) * se_enc, "amortization gap")


# --- a trained VAE: start and bookkeeping -----------------------------------------


@pytest.fixture
def trained(toy_binary):
    train, test = toy_binary
    vae = VAE(16, z_dim=2, hidden_dims=(32,))
    fit(vae, train, config=TrainConfig(epochs=5, batch_size=32, lr=1e-2), progress=False)
    return vae, test[:12]


def test_local_guide_starts_at_the_encoder_output(trained):
    vae, x = trained
    loc, scale = vae.encoder(x)
    local = LocalGuide(DiagonalGaussian(), vae.encoder, (loc, scale))
    start_loc, start_scale = local.params()
    torch.testing.assert_close(start_loc, loc)
    torch.testing.assert_close(start_scale, scale)
    torch.testing.assert_close(local.params(slice(2, 3))[1], scale[2:3])


def test_fitting_q_star_leaves_the_vae_untouched(trained):
    vae, x = trained
    vae.zero_grad(set_to_none=True)
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    flags = [p.requires_grad for p in vae.parameters()]
    vae.train()  # fit_local_guide switches to eval() and must switch back
    fit_local_guide(vae, x, steps=20)
    assert all(torch.equal(before[k], v) for k, v in vae.state_dict().items())
    assert [p.requires_grad for p in vae.parameters()] == flags
    assert all(p.grad is None for p in vae.parameters())  # frozen: no gradients computed
    assert vae.training  # the mode is restored after the fit's eval()
