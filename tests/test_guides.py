"""Guide families: full-covariance and IAF guides against closed forms and brute force,
and ``--guide`` / ``--flow-steps`` through the command line."""

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import UNRELIABLE, check_unreliable_line
from torch import nn

from pyro_vae import VAE
from pyro_vae.cli import main
from pyro_vae.errors import UsageError
from pyro_vae.gaps import decompose_gap
from pyro_vae.guides import IAF, DiagonalGaussian, FullCovariance, get_guide_family
from pyro_vae.limits import MAX_FLOW_STEPS

D64 = torch.float64
SMALL = ["--dataset", "digits", "--hidden-dims", "16", "--z-dim", "2", "--no-progress"]


class CorrelatedLinearGaussian(nn.Module):
    """z ~ N(0, I_2), x | z ~ N(W z + b, s^2 I): a posterior N(mu(x), Sigma) whose two
    dimensions are strongly correlated (|r| = 0.77 here), and an exact log P(x)."""

    max_plate_nesting = 1

    def __init__(self, family, s: float = 0.5):
        super().__init__()
        self.W = torch.tensor([[1.0, 0.9], [0.9, 1.0], [0.3, -0.2]], dtype=D64)
        self.b = torch.tensor([0.1, -0.2, 0.3], dtype=D64)
        self.s = s
        self.guide_family = family
        self.encoder = _StartAtPrior(family)

    def guide_parts(self):
        return self.guide_family, self.encoder

    def model(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=D64), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.s).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", self.guide_family.distribution(self.encoder, self.encoder(x)))

    def exact_log_px(self, x):
        cov = self.W @ self.W.T + self.s**2 * torch.eye(3, dtype=D64)
        return dist.MultivariateNormal(self.b, cov).log_prob(x)

    def precision(self):
        return torch.eye(2, dtype=D64) + self.W.T @ self.W / self.s**2


class _StartAtPrior(nn.Module):
    """An 'encoder' that proposes N(0, I) for every point: q* has everything to learn."""

    def __init__(self, family):
        super().__init__()
        self.family = family

    def forward(self, x):
        n = x.shape[0]
        loc, scale = torch.zeros(n, 2, dtype=D64), torch.ones(n, 2, dtype=D64)
        if isinstance(self.family, FullCovariance):
            return loc, torch.diag_embed(scale)
        return loc, scale


def test_a_full_covariance_guide_reaches_the_exact_log_likelihood():
    """The posterior is a correlated Gaussian: the full-covariance q* fitted per point
    is the posterior itself (gap below 0.01 nats), the diagonal one cannot be: its gap
    is the closed-form KL of the best diagonal Gaussian, (sum log Lambda_ii - log det
    Lambda) / 2 for posterior precision Lambda."""
    x = torch.tensor([[0.5, 1.0, -0.3], [-1.0, 0.2, 0.4], [1.5, 1.2, 0.0]], dtype=D64)
    # a small Adam step: the fit's noise floor scales with it (measured gap 0.005)
    fit = dict(steps=4000, lr=0.005, num_particles=20, num_samples=4000, seed=0)
    full = CorrelatedLinearGaussian(FullCovariance())
    exact = full.exact_log_px(x)
    g = decompose_gap(full, x, **fit)
    assert (exact - g.elbo_optimal).abs().max() < 0.01  # the whole gap, per point
    # q* is the posterior to within that: nearly constant weights (measured 0.001)
    torch.testing.assert_close(g.log_px, exact, atol=0.005, rtol=0)

    diagonal = CorrelatedLinearGaussian(DiagonalGaussian())
    precision = diagonal.precision()
    kl_mean_field = 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision))
    r = precision[0, 1] / precision.diagonal().prod().sqrt()
    assert abs(float(r)) > 0.7 and float(kl_mean_field) > 0.3
    g = decompose_gap(diagonal, x, **{**fit, "steps": 1500, "lr": 0.02})
    # ELBO[q*] of 4,000 samples: its standard error is below 0.02 nats here
    torch.testing.assert_close(exact - g.elbo_optimal, kl_mean_field.expand(3), atol=0.03, rtol=0)


def _iaf_density_parts(seed=0, z_dim=2, steps=2):
    torch.manual_seed(seed)
    family = IAF(steps)
    encoder = family.build(5, (8,), z_dim).double()
    for flow in encoder.flows:  # away from the identity the flow starts at
        for p in flow.parameters():
            nn.init.normal_(p, std=0.8)
    params = tuple(t.detach() for t in encoder(torch.randn(1, 5, dtype=D64)))
    return family, encoder, params


def test_iaf_log_density_is_the_change_of_variables():
    family, encoder, params = _iaf_density_parts()
    loc, scale, _ = params
    q = family.distribution(encoder, params)
    transforms = encoder.transforms(params[2])

    def push(eps):  # base sample -> z through every step
        z = eps
        for t in transforms:
            z = t(z)
        return z

    for _ in range(5):
        eps = loc + scale * torch.randn_like(loc)
        z = push(eps)
        jac = torch.autograd.functional.jacobian(lambda e: push(e[None])[0], eps[0])
        base = dist.Normal(loc[0], scale[0]).log_prob(eps[0]).sum()
        expected = base - torch.linalg.slogdet(jac)[1]
        # a fresh copy of z: log_prob inverts the flow instead of using the cache
        torch.testing.assert_close(q.log_prob(z.clone())[0], expected, rtol=1e-8, atol=1e-8)


def test_iaf_samples_have_the_density_it_reports():
    """On a grid the reported density integrates to 1, and its mean and covariance are
    those of 200,000 samples (within 5 standard errors)."""
    family, encoder, params = _iaf_density_parts(seed=1)
    q = family.distribution(encoder, params)
    with torch.no_grad():
        samples = q.sample((200_000,))[:, 0]
    lo, hi = samples.min(0).values - 1, samples.max(0).values + 1
    axes = [torch.linspace(float(lo[i]), float(hi[i]), 400, dtype=D64) for i in range(2)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 1, 2)
    with torch.no_grad():
        density = q.log_prob(grid)[:, 0].exp()
    cell = (axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0])
    assert float(density.sum() * cell) == pytest.approx(1.0, abs=2e-3)
    points = grid[:, 0]
    mean = (density[:, None] * points).sum(0) * cell
    centred = points - mean
    cov = (density[:, None, None] * centred[:, :, None] * centred[:, None, :]).sum(0) * cell
    se = samples.std(0) / math.sqrt(len(samples))
    assert ((samples.mean(0) - mean).abs() < 5 * se).all()
    torch.testing.assert_close(torch.cov(samples.T), cov, rtol=0.02, atol=0.02)


def test_guide_families_are_values_that_round_trip():
    assert get_guide_family("iaf", flow_steps=3) == IAF(3)
    assert get_guide_family(FullCovariance()) == FullCovariance()
    with pytest.raises(UsageError, match="unknown guide family 'flowy'"):
        get_guide_family("flowy")
    for steps in (0, 2.5, MAX_FLOW_STEPS + 1, 10**20):  # the last would build for ever
        with pytest.raises(UsageError, match=r"flow_steps must be an integer in \[1, 1024\]"):
            IAF(steps)
    for family in (DiagonalGaussian(), FullCovariance(), IAF(2)):
        vae = VAE(12, z_dim=3, hidden_dims=(8,), guide_family=family)
        clone = VAE.from_config(json.loads(json.dumps(vae.config())))
        assert clone.guide_family == family
        clone.load_state_dict(vae.state_dict())
        x = torch.rand(4, 12).round()
        torch.testing.assert_close(clone.reconstruct(x), vae.reconstruct(x))


@pytest.mark.filterwarnings(UNRELIABLE)
@pytest.mark.parametrize("guide", [["--guide", "full-covariance"], ["--guide", "iaf"]])
def test_guides_train_evaluate_and_resume_from_the_command_line(tmp_path, capsys, guide):
    run = tmp_path / "run"
    assert main(["train", *SMALL, "--epochs", "2", *guide, "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    stored = config["model"]["guide_family"]
    assert stored["name"] == guide[1] and stored.get("flow_steps", 2) == 2
    args = ["evaluate", "--run", str(run), "--num-samples", "50", "--limit", "10"]
    assert main([*args, "--gap-decomposition", "--gap-points", "4", "--gap-steps", "5"]) == 0
    report = json.loads((run / "eval_n10.json").read_text())
    assert check_unreliable_line(capsys.readouterr().err, report)  # 4 or 5 of the 10 points
    assert math.isfinite(report["gap_decomposition"]["approximation_gap"]["mean"])
    assert main(["train", "--out", str(run), "--resume", "--epochs", "3", "--no-progress"]) == 0
    assert json.loads((run / "history.json").read_text())["epoch"] == [1, 2, 3]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--flow-steps", "2"], "--flow-steps sets the flow of --guide iaf"),
        (["--guide", "full-covariance", "--flow-steps", "3"], "the full-covariance guide"),
        (["--guide", "iaf", "--flow-steps", "0"], "expected an integer in [1, 1024], got 0"),
        (["--guide", "flowy"], "invalid choice: 'flowy'"),
    ],
)
def test_bad_guide_options_exit_2(tmp_path, capsys, extra, message):
    try:
        code = main(["train", *SMALL, *extra, "--out", str(tmp_path / "r")])
    except SystemExit as stop:  # refused by the parser
        code = stop.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_the_cvae_takes_a_guide_family_and_the_regressor_refuses_one(tmp_path, capsys):
    run = tmp_path / "cvae"
    args = ["train", *SMALL, "--model", "cvae", "--task", "quadrants-2", "--epochs", "1"]
    assert main([*args, "--guide", "iaf", "--flow-steps", "3", "--out", str(run)]) == 0
    model = json.loads((run / "config.json").read_text())["model"]
    assert model["guide_family"] == {"name": "iaf", "flow_steps": 3}
    assert main(["evaluate", "--run", str(run), "--num-samples", "20", "--limit", "5"]) == 0
    capsys.readouterr()
    args = ["train", "--dataset", "digits", "--model", "regressor", "--task", "label"]
    assert main([*args, "--guide", "iaf", "--out", str(tmp_path / "r")]) == 2
    assert "--guide applies to --model vae or cvae or ssvae, not to --model regressor" in (
        capsys.readouterr().err
    )


def test_reparameterized_normal_draws_and_scores_as_pyros_normal():
    from pyro_vae.guides import ReparameterizedNormal

    loc = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    raw = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    grads, values = [], []
    for cls in (dist.Normal, ReparameterizedNormal):
        q = cls(loc, raw.exp()).to_event(1).expand((5, 4))  # as a particle plate does
        torch.manual_seed(3)
        z = q.rsample()
        log_q = q.log_prob(z)  # from the kept noise for ReparameterizedNormal
        # a downstream use of z as in an ELBO, so the path through z counts
        objective = (z.sin().sum(-1) - log_q).sum()
        grads.append(torch.autograd.grad(objective, (loc, raw)))
        values.append((z.detach(), log_q.detach()))
    torch.testing.assert_close(values[0][0], values[1][0], rtol=0, atol=0)  # same draws
    torch.testing.assert_close(values[0][1], values[1][1], rtol=1e-12, atol=1e-12)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # any other value is scored by Normal.log_prob
    q = ReparameterizedNormal(loc.detach(), raw.detach().exp())
    q.rsample()
    other = torch.zeros(4, 3, dtype=torch.float64)
    torch.testing.assert_close(
        q.log_prob(other), dist.Normal(loc.detach(), raw.detach().exp()).log_prob(other)
    )
