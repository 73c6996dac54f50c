"""Model/guide pairs and arguments the evaluator refuses, each with its own message
(those of ``test_evaluate_contract.py`` aside): what the user passed, and what to do."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from linear_gaussian import D64, LinearGaussian

from pyro_vae.evaluate import evaluate_dataset, iwae_bounds, log_likelihood, log_weights


@pytest.fixture
def lg():
    return LinearGaussian()


def test_the_guide_as_proposal_needs_a_guide(lg):
    with pytest.raises(ValueError, match=r"^proposal='guide' needs a guide$"):
        log_likelihood(lg.model, None, lg.sample_x(3), num_samples=4)
    # the prior as proposal needs none
    assert log_likelihood(lg.model, None, lg.sample_x(3), num_samples=4, proposal="prior")


@pytest.mark.parametrize("chunk_size", [0, -3])
def test_a_chunk_needs_a_particle(lg, chunk_size):
    with pytest.raises(ValueError, match=rf"^chunk_size must be at least 1, got {chunk_size}$"):
        log_weights(lg.model, lg.exact_guide, lg.sample_x(3), num_samples=4, chunk_size=chunk_size)


def test_a_site_with_more_batch_dims_than_its_plates_is_refused(lg):
    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(torch.zeros(lg.d, dtype=D64), 1.0).to_event(1))
            # a leading batch dim of 2 that no plate declares
            loc = torch.zeros(2, 1, *x.shape, dtype=D64)
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    with pytest.raises(
        ValueError,
        match=r"^site 'x' has batch shape \(2, 5, 3\) with more dims than its plates \(2 "
        r"including particles\); declare extra dims with \.to_event\(\)$",
    ):
        log_likelihood(model, lg.mean_field_guide, lg.sample_x(3), num_samples=5)


def test_data_plates_at_other_dims_in_model_and_guide_are_refused():
    def model(x):
        with pyro.plate("data", len(x), dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(len(x)), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x), dim=-2):  # the points along another dim
            pyro.sample("z", dist.Normal(torch.zeros(len(x), 1), 1.0))

    with pytest.raises(
        ValueError, match=r"^the 'data' plate is used with different dims or sizes: "
    ) as refusal:
        log_likelihood(model, guide, torch.zeros(4), num_samples=3)
    assert "(-1, 4)" in str(refusal.value) and "(-2, 4)" in str(refusal.value)


def test_a_sequential_data_plate_is_refused(lg):
    def model(x):
        for i in pyro.plate("data", x.shape[0]):  # sequential: no dim to index points by
            pyro.sample(f"x_{i}", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1), obs=x[i])

    with pytest.raises(ValueError, match=r"^the 'data' plate needs a negative dim$"):
        log_likelihood(model, None, lg.sample_x(2), num_samples=3, proposal="prior")


def test_a_guide_site_outside_the_data_plate_is_refused(lg):
    def guide(x):
        pyro.sample("scale", dist.LogNormal(0.0, 1.0))  # a global latent of the guide
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(torch.zeros(lg.d, dtype=D64), 1.0).to_event(1))

    with pytest.raises(
        ValueError,
        match=r"^guide site 'scale' is outside the 'data' plate; a per-point log-likelihood "
        r"needs every sample site inside it$",
    ):
        log_likelihood(lg.model, guide, lg.sample_x(3), num_samples=3)


def test_a_guide_site_the_model_lacks_is_refused(lg):
    def guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.MultivariateNormal(lg.posterior_mean(x), lg.cov))
            pyro.sample("w", dist.Normal(torch.zeros(2, dtype=D64), 1.0).to_event(1))

    with pytest.raises(ValueError, match=r"^the guide samples site\(s\) w that the model lacks$"):
        log_likelihood(lg.model, guide, lg.sample_x(3), num_samples=3)


def test_scale_factors_are_ignored_with_a_warning(lg):
    x = lg.sample_x(3)

    def scaled_model(x):
        with pyro.poutine.scale(scale=2.0):
            lg.model(x)

    with pytest.warns(
        UserWarning, match=r"poutine\.scale factors in the model or guide are ignored"
    ):
        scaled = log_likelihood(scaled_model, lg.exact_guide, x, num_samples=5)
    # the estimate is that of the unscaled model: exact with the exact posterior as guide
    torch.testing.assert_close(scaled.log_px, lg.exact_log_px(x), atol=1e-9, rtol=0)


def test_no_data_points_to_evaluate(lg):
    with pytest.raises(
        ValueError, match=r"^no data points to evaluate \(the first dimension of data is 0\)$"
    ):
        evaluate_dataset(lg.model, lg.exact_guide, lg.sample_x(3)[:0], num_samples=4, ks=(1,))


def test_iwae_bounds_need_group_sizes(lg):
    with pytest.raises(
        ValueError, match=r"every k in ks must lie in \[1, num_samples=10\], got \(\)"
    ):
        iwae_bounds(lg.model, lg.exact_guide, lg.sample_x(3), ks=(), num_samples=10)
    with pytest.raises(ValueError, match=r"got \(0, 1\)"):
        iwae_bounds(lg.model, lg.exact_guide, lg.sample_x(3), ks=(0, 1), num_samples=10)


def test_the_gap_decomposition_needs_steps_of_zero_or_more(toy_binary):
    from pyro_vae import VAE
    from pyro_vae.gaps import decompose_gap

    vae = VAE(16, z_dim=2, hidden_dims=(8,))
    with pytest.raises(ValueError, match=r"^steps must be >= 0, got -1$"):
        decompose_gap(vae, toy_binary[1][:3], steps=-1, num_samples=5, seed=0)
