"""Prior families against independent computations: a hand-written mixture formula
(scipy's normal densities), the VampPrior as the mean of the guide's densities at its
pseudo-inputs, and a flow's density against a brute-force change of variables (the
Jacobian of its inverse by autograd), the mass of a grid and its own samples."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

from pyro_vae.errors import UsageError
from pyro_vae.priors import PRIORS, FlowPrior, MixturePrior, VampPrior, get_prior

#: float32 log densities against float64 formulas
ATOL = 1e-4


def _built(prior, z_dim=3, x_dim=5):
    torch.manual_seed(0)
    prior.setup(z_dim, x_dim)
    for p in prior.parameters():  # away from the initial values, which are special
        p.data.add_(0.3 * torch.randn_like(p))
    return prior


def test_the_standard_prior_is_the_unit_gaussian():
    prior = _built(get_prior("standard"))
    z = torch.randn(7, 3)
    expected = stats.norm.logpdf(z.numpy()).sum(-1)
    np.testing.assert_allclose(prior.distribution().log_prob(z).numpy(), expected, atol=ATOL)


def test_a_mixture_density_is_the_hand_written_formula():
    prior = _built(MixturePrior(components=4))
    z = torch.randn(11, 3) * 2
    pi = torch.log_softmax(prior.logits, -1).detach().numpy()
    locs, scales = prior.locs.detach().numpy(), prior.log_scales.exp().detach().numpy()
    per = stats.norm.logpdf(z.numpy()[:, None, :], locs[None], scales[None]).sum(-1)
    expected = logsumexp(pi[None] + per, axis=-1)
    np.testing.assert_allclose(prior.distribution().log_prob(z).detach(), expected, atol=ATOL)


def test_the_vamp_prior_is_the_mean_of_the_guide_at_its_pseudo_inputs():
    import pyro.distributions as dist

    prior = _built(VampPrior(components=6))
    weight = torch.randn(5, 3)

    def encode(u):  # a stand-in guide: Q(z|u) = N(u W, diag(softplus(u)^2 W^2 + 0.1))
        loc = u @ weight
        scale = torch.nn.functional.softplus(u) @ weight.abs() + 0.1
        return dist.Normal(loc, scale).to_event(1)

    z = torch.randn(9, 3)
    u = prior.pseudo_inputs.detach()
    loc, scale = (u @ weight).numpy(), (torch.nn.functional.softplus(u) @ weight.abs() + 0.1)
    per = stats.norm.logpdf(z.numpy()[:, None, :], loc[None], scale.numpy()[None]).sum(-1)
    expected = logsumexp(per, axis=-1) - math.log(6)
    got = prior.distribution(encode).log_prob(z).detach()
    np.testing.assert_allclose(got, expected, atol=ATOL)


def test_data_initialised_pseudo_inputs_are_training_points():
    prior = VampPrior(components=3, init="data")
    prior.setup(2, 4)
    x = torch.rand(10, 4)
    prior.initialize(x, generator=torch.Generator().manual_seed(1))
    nearest = torch.cdist(prior.pseudo_inputs.detach(), x).min(dim=1).values
    assert float(nearest.max()) < 0.05  # within the noise of a training point


def test_a_flow_density_is_the_change_of_variables_of_its_inverse():
    prior = _built(FlowPrior(steps=3, hidden=8), z_dim=2)
    flow = prior.distribution()
    inverse = flow.transforms[::-1]

    def to_base(z):
        for t in inverse:
            z = t.inv(z)
        return z

    for z in torch.randn(5, 2) * 1.5:
        jacobian = torch.autograd.functional.jacobian(to_base, z)
        u = to_base(z)
        expected = stats.norm.logpdf(u.detach().numpy()).sum() + math.log(
            abs(float(torch.linalg.det(jacobian)))
        )
        assert float(flow.log_prob(z).detach()) == pytest.approx(expected, abs=ATOL)


def test_a_flow_density_has_unit_mass_and_the_moments_of_its_samples():
    prior = _built(FlowPrior(steps=2, hidden=8), z_dim=2)
    flow = prior.distribution()
    step = 0.05
    axis = torch.arange(-8, 8, step) + step / 2
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        density = flow.log_prob(grid).exp()
        mass = float(density.sum()) * step**2
        mean = (density[:, None] * grid).sum(0) * step**2
        torch.manual_seed(2)
        samples = flow.sample((200_000,))
    assert mass == pytest.approx(1.0, abs=2e-3)  # the tails beyond +-8 hold no mass here
    # 200,000 samples: a standard error of about 0.002 times the spread
    np.testing.assert_allclose(samples.mean(0), mean, atol=0.02)


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: get_prior("gamma"), "unknown prior 'gamma'; valid names: standard, mixture"),
        (lambda: MixturePrior(components=0), "prior_components must be an integer of at least 1"),
        (lambda: VampPrior(init="zeros"), "unknown pseudo-input init 'zeros'"),
        (lambda: FlowPrior(steps=0), "prior_flow_steps must be an integer of at least 1"),
        (lambda: FlowPrior().setup(1, 4), "needs z_dim of at least 2"),
    ],
)
def test_bad_priors_are_refused(make, words):
    with pytest.raises(UsageError, match=words.replace("(", r"\(")):
        make()


@pytest.mark.parametrize("name", sorted(PRIORS))
def test_a_prior_rebuilds_from_its_config(name):
    prior = get_prior(name)
    again = get_prior(**prior.config())
    assert type(again) is type(prior) and again.config() == prior.config()
