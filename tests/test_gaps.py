import pytest
import torch

from pyro_vae import VAE, TrainConfig, fit
from pyro_vae.gaps import LocalGaussianGuide, decompose_gap, fit_local_guide


@pytest.fixture
def trained(toy_binary):
    train, test = toy_binary
    vae = VAE(16, z_dim=2, hidden_dims=(32,))
    fit(vae, train, config=TrainConfig(epochs=5, batch_size=32, lr=1e-2), progress=False)
    return vae, test[:12]


def test_local_guide_starts_at_the_encoder_output(trained):
    vae, x = trained
    loc, scale = vae.encoder(x)
    local = LocalGaussianGuide(loc, scale, vae.encoder.min_scale)
    torch.testing.assert_close(local.loc, loc)
    torch.testing.assert_close(
        torch.nn.functional.softplus(local.raw_scale) + vae.encoder.min_scale, scale
    )


def test_fitting_q_star_leaves_the_vae_untouched(trained):
    vae, x = trained
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    flags = [p.requires_grad for p in vae.parameters()]
    fit_local_guide(vae, x, steps=20)
    assert all(torch.equal(before[k], v) for k, v in vae.state_dict().items())
    assert [p.requires_grad for p in vae.parameters()] == flags


def test_gaps_add_up_and_optimizing_helps(trained):
    vae, x = trained
    torch.manual_seed(0)
    g = decompose_gap(vae, x, steps=300, num_samples=2000)
    torch.testing.assert_close(
        g.approximation_gap + g.amortization_gap, g.log_px - g.elbo_amortized
    )
    # q* starts at q and climbs the same ELBO: on average it must not be worse
    # (0.05 nats: Monte Carlo noise of the 2,000-sample ELBO estimates)
    assert g.amortization_gap.mean() > -0.05
    assert g.approximation_gap.mean() > -0.05  # log P(x) >= ELBO[q*] up to noise
    assert g.elbo_optimal.mean() > g.elbo_amortized.mean()
    assert g.log_px.shape == (12,)
