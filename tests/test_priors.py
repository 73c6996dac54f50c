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


def test_the_evaluator_finds_the_closed_form_marginal_of_a_mixture_prior():
    """z ~ sum_k pi_k N(mu_k, S_k), x | z ~ N(W z + b, s^2 I): log p(x) is the mixture
    of N(W mu_k + b, W S_k W^T + s^2 I), and the posterior the mixture of the
    components' Gaussian posteriors, weighted by pi_k times those marginals. With that
    posterior as the proposal every importance weight equals p(x): the evaluator must
    return the closed form to float64 rounding (1e-8), whatever K, and so must AIS
    started at that posterior."""
    import pyro
    import pyro.distributions as dist

    from pyro_vae.ais_datasets import ais_dataset
    from pyro_vae.evaluate import log_likelihood

    prior = _built(MixturePrior(components=3), z_dim=2).double()
    g = torch.Generator().manual_seed(3)
    W = torch.randn(4, 2, generator=g, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    s = 0.5

    def model(x):
        p = prior.distribution()
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", p)
            pyro.sample("x", dist.Normal(z @ W.T + b, s).to_event(1), obs=x)

    with torch.no_grad():
        pi = torch.softmax(prior.logits, -1)
        S = torch.diag_embed(prior.log_scales.exp() ** 2)  # (K, 2, 2)
        marginal = dist.MultivariateNormal(prior.locs @ W.T + b, W @ S @ W.T + s**2 * torch.eye(4))

        def posterior(x):  # batch (N,), a mixture over K of Gaussians in z
            precision = torch.linalg.inv(S) + W.T @ W / s**2  # (K, 2, 2)
            cov = torch.linalg.inv(precision)
            rhs = (torch.linalg.inv(S) @ prior.locs[..., None])[None] + ((x - b) @ W / s**2)[
                :, None, :, None
            ]
            mean = (cov[None] @ rhs)[..., 0]  # (N, K, 2)
            logits = pi.log() + marginal.log_prob(x[:, None])
            parts = dist.MultivariateNormal(mean, cov[None].expand(len(x), -1, -1, -1))
            return dist.MixtureSameFamily(dist.Categorical(logits=logits), parts)

        def proposal(x):
            with pyro.plate("data", x.shape[0], dim=-1):
                pyro.sample("z", posterior(x))

        torch.manual_seed(4)
        x = prior.distribution().sample((6,)) @ W.T + b + s * torch.randn(6, 4, dtype=torch.float64)
        exact = torch.logsumexp(pi.log() + marginal.log_prob(x[:, None]), dim=-1)
        estimate = log_likelihood(model, proposal, x, num_samples=50).log_px
    np.testing.assert_allclose(estimate, exact, atol=1e-8)
    # AIS started at that posterior: every intermediate target q^(1-b) p(x, z)^b is
    # p(x)^b q, so each weight increment is (b_t - b_t-1) log p(x) wherever HMC moves
    # the chains over the mixture's support, R^2: the closed form again, to rounding
    annealed = ais_dataset(model, proposal, x, seed=0, init="guide", num_steps=20, num_chains=4)
    np.testing.assert_allclose(annealed.log_px, exact, atol=1e-8)
    assert float(annealed.acceptance.min()) > 0  # the chains did move


# --- the VAE and the command line -------------------------------------------------------

PRIOR_RUNS = {
    "mixture": ["--prior", "mixture", "--prior-components", "3"],
    "vamp": ["--prior", "vamp", "--prior-components", "5", "--prior-init", "data"],
    "flow": ["--prior", "flow", "--prior-flow-steps", "2"],
}


@pytest.mark.filterwarnings("ignore::pyro_vae.errors.UnreliableWeights")  # K = 20
@pytest.mark.parametrize("name", sorted(PRIOR_RUNS))
def test_each_prior_trains_resumes_samples_and_evaluates(name, tmp_path):
    import json

    from conftest import FAST

    from pyro_vae.cli import main
    from pyro_vae.run import open_run

    run = tmp_path / name
    given = ["--epochs", "1", "--no-progress", *PRIOR_RUNS[name]]
    assert main(["train", *FAST, *given, "--out", str(run)]) == 0
    stored = json.loads((run / "config.json").read_text())["model"]["prior_family"]
    assert stored["name"] == name
    # the command that started the run resumes it
    assert main(["train", "--out", str(run), "--resume", *given[2:], "--epochs", "2"]) == 0
    assert main(["sample", "--run", str(run), "-n", "9"]) == 0
    evaluate = ["evaluate", "--run", str(run), "--limit", "8", "--num-samples", "20"]
    gap = ["--gap-decomposition", "--gap-points", "2", "--gap-steps", "3"]
    assert main([*evaluate, *gap, "--no-progress"]) == 0
    gaps = json.loads((run / "eval_n8.json").read_text())["gap_decomposition"]
    assert gaps["num_points"] == 2 and math.isfinite(gaps["approximation_gap"]["mean"])
    model = open_run(run).model
    assert model.prior_family.config() == stored
    learned = dict(model.prior_family.named_parameters())
    assert learned and all(p.requires_grad for p in learned.values())


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--prior-components", "3"], "--prior-components sets --prior mixture or vamp, not"),
        (["--prior", "flow", "--prior-components", "3"], "not flow; drop --prior-components"),
        (["--prior-flow-steps", "2"], "--prior-flow-steps sets --prior flow, not standard"),
        (["--prior", "mixture", "--prior-init", "data"], "--prior-init sets --prior vamp"),
        (["--prior", "mixture", "--prior-components", "0"], "expected an integer in [1, "),
        (["--prior", "learned"], "--prior learned is the conditional prior network P(z|X)"),
        (["--model", "cvae", "--task", "label", "--prior", "mixture"], "the CVAE's prior is"),
        (["--model", "regressor", "--task", "label", "--prior", "flow"], "--prior applies to"),
        (["--prior", "flow", "--z-dim", "1"], "a flow prior couples two halves of z"),
        (["--prior", "vamp", "--guide", "iaf"], "choose --guide diagonal or full-covariance"),
    ],
)
def test_bad_prior_options_are_one_line_before_anything_is_written(
    options, words, tmp_path, capsys
):
    from conftest import FAST

    from pyro_vae.cli import main

    base = ["--dataset", "digits"] if "regressor" in options else FAST  # no --z-dim there
    try:
        status = main(["train", *base, "--epochs", "1", *options, "--out", str(tmp_path / "r")])
    except SystemExit as stop:
        status = stop.code
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "r").exists()


def test_mean_field_with_a_learned_prior_falls_back_to_the_monte_carlo_kl(tmp_path):
    """TraceMeanField_ELBO has no closed-form KL against a mixture: Pyro scores the prior
    term by its log density at the guide's sample, as Trace_ELBO does. With the same
    seed both objectives then draw the same z and must give the same first-epoch loss."""
    import json

    from conftest import FAST

    from pyro_vae.cli import main

    losses = {}
    for objective in ("elbo", "mean-field"):
        run = tmp_path / objective
        options = ["--prior", "mixture", "--objective", objective, "--epochs", "1"]
        assert main(["train", *FAST, *options, "--no-progress", "--out", str(run)]) == 0
        losses[objective] = json.loads((run / "history.json").read_text())["train_objective"]
    assert losses["mean-field"] == pytest.approx(losses["elbo"], rel=1e-6)
