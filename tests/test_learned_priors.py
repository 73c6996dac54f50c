"""Learned priors beyond the one-layer VAE, and what a run reports about its prior: the
two-layer model's top layer, the conv networks, the KL term against its closed form,
the share of the aggregate posterior each mixture component explains against a hand
count, and the results of a run against its own checkpoint."""

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

from pyro_vae.diagnostics import kl_term, kl_to_standard_normal, mixture_usage, perplexity
from pyro_vae.models import HVAE
from pyro_vae.priors import VampPrior

#: float32 log densities against float64 formulas
ATOL = 1e-4
#: a Monte Carlo mean of N draws within this many standard errors of its expectation
Z_TOLERANCE = 4.0


def test_the_two_layer_vamp_prior_is_the_guide_of_z2_at_the_centre_of_z1():
    """p(z2) = (1/K) sum_k N(z2; encoder2(mu1(u_k))), mu1 the mean of q(z1|u_k)."""
    torch.manual_seed(0)
    model = HVAE(6, z_dims=(4, 3), hidden_dims=(8, 5), prior_family=VampPrior(components=5))
    z2 = torch.randn(7, 3)
    with torch.no_grad():
        loc1, _ = model.encoder1(model.prior_family.pseudo_inputs)
        loc2, raw = model.encoder2.net(loc1).split(3, dim=-1)
        scale2 = torch.nn.functional.softplus(raw) + model.encoder2.min_scale
    per = stats.norm.logpdf(z2.numpy()[:, None], loc2.numpy()[None], scale2.numpy()[None])
    expected = logsumexp(per.sum(-1), axis=-1) - math.log(5)
    got = model.prior().log_prob(z2).detach().numpy()
    np.testing.assert_allclose(got, expected, atol=ATOL)


@pytest.mark.parametrize("prior", ["mixture", "flow"])
def test_the_two_layer_model_scores_z2_under_its_learned_prior(prior):
    """The model's z2 site is scored by the prior family's density, nothing else."""
    import pyro
    from pyro import poutine

    torch.manual_seed(1)
    model = HVAE(6, z_dims=(4, 2), hidden_dims=(8, 5), prior_family=prior)
    x = torch.bernoulli(torch.full((3, 6), 0.5))
    trace = poutine.trace(model.model).get_trace(x)
    z2 = trace.nodes["z2"]["value"]
    expected = model.prior_family.distribution().log_prob(z2)
    torch.testing.assert_close(trace.nodes["z2"]["fn"].log_prob(z2), expected)
    pyro.clear_param_store()


def test_the_kl_term_is_the_closed_form_for_a_gaussian_guide_and_prior():
    """Diagonal Gaussian guide against N(0, I): Doersch's eq. 7 per point, averaged."""
    from pyro_vae import VAE

    torch.manual_seed(2)
    vae = VAE(10, z_dim=3, hidden_dims=(8,))
    x = torch.bernoulli(torch.full((40, 10), 0.4))
    torch.manual_seed(3)  # the guide draws from the global stream
    draws = 400
    estimate, first = kl_term(vae.model, vae.guide, x, ("z",), draws=draws)
    with torch.no_grad():
        loc, scale = vae.encoder(x)
        per_point = kl_to_standard_normal(loc, scale).sum(-1).double()
    exact = float(per_point.mean())
    # the estimate averages draws x points of log q - log p; bound its spread by sampling
    z = loc + scale * torch.randn(draws, *loc.shape)
    log_ratio = (
        torch.distributions.Normal(loc, scale).log_prob(z)
        - torch.distributions.Normal(0, 1).log_prob(z)
    ).sum(-1)
    stderr = float(log_ratio.std()) / math.sqrt(log_ratio.numel())
    assert abs(estimate - exact) < Z_TOLERANCE * stderr, (estimate, exact, stderr)
    assert first["z"].shape == (40, 3)


def test_mixture_usage_is_the_share_of_points_each_component_explains():
    """Two components far apart: three points at the first and one at the second give
    shares 3/4 and 1/4 whatever the weights; the components in use are exp of the
    entropy of those shares."""
    import pyro.distributions as dist

    components = dist.Normal(torch.tensor([[-50.0, 0.0], [50.0, 0.0]]), 1.0).to_event(1)
    prior = dist.MixtureSameFamily(dist.Categorical(logits=torch.tensor([2.0, -1.0])), components)
    z = torch.tensor([[-50.0, 0.1], [-49.5, 0.0], [-50.3, -0.2], [50.2, 0.0]])
    usage = mixture_usage(prior, z)
    torch.testing.assert_close(usage, torch.tensor([0.75, 0.25]))
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert perplexity(usage) == pytest.approx(math.exp(entropy), rel=1e-6)
    assert perplexity(torch.full((7,), 1 / 7)) == pytest.approx(7.0)
    assert mixture_usage(dist.Normal(torch.zeros(2), 1.0).to_event(1), z) is None


def test_a_mixture_run_reports_the_weights_of_its_checkpoint(tmp_path):
    from conftest import FAST

    from pyro_vae.cli import main
    from pyro_vae.run import open_run

    run = tmp_path / "mixture"
    given = ["--prior", "mixture", "--prior-components", "4", "--no-progress"]
    assert main(["train", *FAST, *given, "--out", str(run)]) == 0
    diagnostics = json.loads((run / "results.json").read_text())["diagnostics"]
    prior = open_run(run).model.prior_family
    weights = torch.softmax(prior.logits.detach().double(), -1)
    np.testing.assert_allclose(diagnostics["prior_weights"], weights.numpy(), rtol=1e-5)
    assert len(diagnostics["prior_usage"]) == 4
    assert 1.0 <= diagnostics["prior_components_in_use"] <= 4.0
    assert diagnostics["kl_term"] > 0 and diagnostics["active_units"] in (0, 1, 2)
    shown = (run / "results.md").read_text()
    assert "prior components in use" in shown and "kl term" in shown
    assert "VAE, mixture prior (components=4)" in shown


@pytest.mark.filterwarnings("ignore::pyro_vae.errors.UnreliableWeights")  # K = 20
@pytest.mark.parametrize(
    "given",
    [
        ["--model", "hvae", "--z-dims", "4,2", "--hidden-dims", "16,8", "--prior", "vamp"],
        ["--network", "conv", "--z-dim", "2", "--hidden-dims", "16", "--prior", "vamp"],
    ],
    ids=["hvae-vamp", "conv-vamp"],
)
def test_other_networks_train_resume_sample_and_evaluate_with_a_learned_prior(given, tmp_path):
    from pyro_vae.cli import main
    from pyro_vae.run import open_run

    run = tmp_path / "run"
    base = ["--dataset", "digits", "--no-progress", *given, "--prior-components", "3"]
    assert main(["train", *base, "--epochs", "1", "--out", str(run)]) == 0
    assert main(["train", *base, "--epochs", "2", "--resume", "--out", str(run)]) == 0
    assert main(["sample", "--run", str(run), "-n", "4"]) == 0
    evaluate = ["evaluate", "--run", str(run), "--limit", "6", "--num-samples", "20"]
    assert main([*evaluate, "--no-progress"]) == 0
    model = open_run(run).model
    assert model.prior_family.config() == {"name": "vamp", "components": 3, "init": "random"}
    assert json.loads((run / "history.json").read_text())["epoch"] == [1, 2]
    result = json.loads((run / "eval_n6.json").read_text())
    assert math.isfinite(result["summary"]["log_px"]["mean"])
