import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
from torch.nn import functional as F

from pyro_vae import Gaussian, TrainConfig, fit, mean_elbo
from pyro_vae.errors import UsageError
from pyro_vae.evaluate import log_likelihood
from pyro_vae.models import CVAE, Regressor


@pytest.fixture
def toy_pairs():
    """Y is one of two 12-pixel prototypes, chosen by a coin that X does not show:
    a CVAE can represent the two modes; a regressor can only average them."""
    g = torch.Generator().manual_seed(0)
    protos = (torch.rand(2, 12, generator=g) > 0.5).float()
    x = (torch.rand(240, 4, generator=g) > 0.5).float()
    mode = torch.rand(240, generator=g) < 0.5
    y = protos[mode.long()]
    return (x[:200], y[:200]), (x[200:], y[200:])


@pytest.mark.parametrize("prior", ["fixed", "learned"])
def test_traces_with_and_without_y(prior):
    cvae = CVAE(4, 12, z_dim=3, hidden_dims=(16,), prior=prior)
    x, y = torch.rand(5, 4), torch.bernoulli(torch.full((5, 12), 0.5))
    guide_tr = poutine.trace(cvae.guide).get_trace(x, y)
    model_tr = poutine.trace(poutine.replay(cvae.model, trace=guide_tr)).get_trace(x, y)
    assert model_tr.nodes["y"]["is_observed"] and model_tr.nodes["y"]["fn"].event_shape == (12,)
    assert guide_tr.nodes["z"]["value"].shape == (5, 3)
    params = {n for n, s in guide_tr.nodes.items() if s["type"] == "param"}
    assert any("recognition" in n for n in params)
    # without y: the model samples completions and the guide draws z from P(z|x)
    guide_tr = poutine.trace(cvae.guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(cvae.model, trace=guide_tr)).get_trace(x)
    assert not model_tr.nodes["y"]["is_observed"]
    assert model_tr.nodes["y"]["value"].shape == (5, 12)
    params = {n for n, s in guide_tr.nodes.items() if s["type"] == "param"}
    assert not any("recognition" in n for n in params)
    assert any("prior" in n for n in params) == (prior == "learned")
    assert cvae.complete(x, num_samples=7).shape == (7, 5, 12)


@pytest.mark.parametrize("prior", ["fixed", "learned"])
def test_cvae_trains_and_beats_the_regressor_on_a_two_mode_target(toy_pairs, prior):
    (x, y), (xt, yt) = toy_pairs
    cfg = TrainConfig(epochs=60, batch_size=50, lr=1e-2)
    pyro.set_rng_seed(0)
    cvae = CVAE(4, 12, z_dim=2, hidden_dims=(32,), prior=prior)
    before = mean_elbo(cvae.model, cvae.guide, (xt, yt), num_particles=20)
    fit(cvae, (x, y), (xt, yt), config=cfg, progress=False)
    reg = Regressor(4, 12, hidden_dims=(32,))
    fit(reg, (x, y), config=cfg, progress=False)
    torch.manual_seed(1)
    cvae_ll = log_likelihood(cvae.model, cvae.guide, xt, yt, num_samples=500).log_px.mean()
    reg_ll = reg.exact_log_likelihood(xt, yt).mean()
    assert mean_elbo(cvae.model, cvae.guide, (xt, yt), num_particles=20) > before + 3
    # Optima in closed form: the regressor can only predict 1/2 where the two
    # prototypes disagree, costing log 2 per such pixel; the CVAE can do no better
    # than the coin X does not show, -log 2, and puts the mode in z.
    disagree = int((yt.max(0).values != yt.min(0).values).sum())
    assert reg_ll.item() == pytest.approx(-disagree * math.log(2), abs=0.2)  # 0.2: training slack
    assert -math.log(2) - 0.4 < cvae_ll.item() <= -math.log(2) + 0.05  # 0.4: slack, 0.05: MC
    assert cvae_ll > reg_ll + 1.0


def test_regressor_log_likelihood_by_hand():
    reg = Regressor(3, 5, hidden_dims=(8,))
    x, y = torch.rand(4, 3), torch.bernoulli(torch.full((4, 5), 0.5))
    logits = reg.net(x)
    by_hand = -F.binary_cross_entropy_with_logits(logits, y, reduction="none").sum(-1)
    torch.testing.assert_close(reg.exact_log_likelihood(x, y), by_hand)
    # no latent sites: Trace_ELBO's loss is exactly the negative log-likelihood
    loss = pyro.infer.Trace_ELBO().differentiable_loss(reg.model, reg.guide, x, y)
    torch.testing.assert_close(loss, -by_hand.sum())
    g = Regressor(3, 5, hidden_dims=(8,), likelihood=Gaussian(0.3))
    mean = g.net(x)
    expected = torch.distributions.Normal(mean, 0.3).log_prob(y).sum(-1)
    torch.testing.assert_close(g.exact_log_likelihood(x, y), expected)


def test_bad_condition_shapes_and_settings():
    cvae = CVAE(4, 12, z_dim=2, hidden_dims=(8,))
    with pytest.raises(UsageError, match=r"the condition x has shape \(3, 5\); expected \(N, 4\)"):
        cvae.model(torch.rand(3, 5))
    with pytest.raises(UsageError, match=r"the target y has shape \(3, 11\); expected \(3, 12\)"):
        cvae.guide(torch.rand(3, 4), torch.rand(3, 11))
    with pytest.raises(UsageError, match="prior flow is a prior of the unconditional models"):
        CVAE(4, 12, prior="flow")
    with pytest.raises(UsageError, match="the target y of the training split"):
        fit(
            cvae,
            (torch.rand(60, 4), torch.rand(60, 12)),
            config=TrainConfig(batch_size=10),
            progress=False,
        )


def test_config_round_trip():
    cvae = CVAE(4, 12, z_dim=2, hidden_dims=(8,), prior="learned", likelihood=Gaussian("per-pixel"))
    clone = CVAE.from_config(cvae.config())
    assert clone.config() == cvae.config()
    clone.load_state_dict(cvae.state_dict())
