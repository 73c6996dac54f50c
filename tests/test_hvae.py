"""The two-stochastic-layer model: its ELBO by hand, the evaluator on an exact two-layer
linear-Gaussian model, and ``--model hvae`` through the command line."""

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from pyro_vae.cli import main
from pyro_vae.evaluate import evaluate_dataset
from pyro_vae.models import HVAE
from pyro_vae.objectives import make_objective

D64 = torch.float64
SMALL = ["--dataset", "digits", "--z-dims", "4,2", "--hidden-dims", "16,8", "--no-progress"]
#: what two epochs of training must gain over fair coins, in nats per image
LEARNED_NATS = 1.5


def test_the_elbo_of_one_sample_is_the_hand_written_expectation():
    torch.manual_seed(0)
    m = HVAE(6, z_dims=(3, 2), hidden_dims=(5, 4))
    x = torch.rand(4, 6).round()
    pyro.set_rng_seed(1)
    loss = Trace_ELBO().differentiable_loss(m.model, m.guide, x)
    pyro.set_rng_seed(1)  # the same draws of z1 and z2
    trace = poutine.trace(m.guide).get_trace(x)
    z1, z2 = trace.nodes["z1"]["value"], trace.nodes["z2"]["value"]
    normal = torch.distributions.Normal
    with torch.no_grad():
        log_q = (
            normal(*m.encoder1(x)).log_prob(z1).sum() + normal(*m.encoder2(z1)).log_prob(z2).sum()
        )
        log_p = (
            normal(0.0, 1.0).log_prob(z2).sum()
            + normal(*m.prior1(z2)).log_prob(z1).sum()
            + torch.distributions.Bernoulli(logits=m.decoder(z1)).log_prob(x).sum()
        )
    assert float(-loss.detach()) == pytest.approx(float(log_p - log_q), rel=1e-6)


def test_the_iwae_objective_is_the_log_mean_of_hand_written_weights():
    """IWAE-k training maximizes sum_i log (1/k) sum_j w_ij with w = p(x, z1, z2) /
    q(z1, z2 | x), the k draws of each point from the guide (Burda et al., eq. 8)."""
    torch.manual_seed(0)
    m = HVAE(6, z_dims=(3, 2), hidden_dims=(5, 4))
    x = torch.rand(4, 6).round()
    k = 5
    pyro.set_rng_seed(1)
    loss = make_objective("iwae", k).differentiable_loss(m.model, m.guide, x)
    pyro.set_rng_seed(1)  # the same k draws per point: the guide under a plate of particles
    with pyro.plate("particles", k, dim=-2):
        trace = poutine.trace(m.guide).get_trace(x)
    z1, z2 = trace.nodes["z1"]["value"], trace.nodes["z2"]["value"]  # (k, 4, 3), (k, 4, 2)
    assert z1.shape == (k, 4, 3)
    normal = torch.distributions.Normal
    with torch.no_grad():
        log_q = normal(*m.encoder1(x)).log_prob(z1).sum(-1) + normal(*m.encoder2(z1)).log_prob(
            z2
        ).sum(-1)
        log_p = (
            normal(0.0, 1.0).log_prob(z2).sum(-1)
            + normal(*m.prior1(z2)).log_prob(z1).sum(-1)
            + torch.distributions.Bernoulli(logits=m.decoder(z1)).log_prob(x).sum(-1)
        )
    log_w = log_p - log_q  # (k, 4)
    iwae = (torch.logsumexp(log_w, 0) - math.log(k)).sum()
    assert float(-loss.detach()) == pytest.approx(float(iwae), rel=1e-6)
    # and not the ELBO of the same draws, which lies below it (Jensen) by this much here
    assert float(iwae) > float(log_w.mean(0).sum()) + 0.1


class TwoLayerLinearGaussian:
    """z2 ~ N(0, I_2), z1 | z2 ~ N(A z2 + a, t^2 I_3), x | z1 ~ N(B z1 + b, s^2 I_4),
    with the guide q(z1|x) = p(z1|x) and q(z2|z1) = p(z2|z1), both exact Gaussians: every
    log weight equals log P(x), so the evaluator must return the exact marginal."""

    def __init__(self):
        g = torch.Generator().manual_seed(3)
        self.A = torch.randn(3, 2, generator=g, dtype=D64)
        self.a = torch.randn(3, generator=g, dtype=D64)
        self.B = torch.randn(4, 3, generator=g, dtype=D64)
        self.b = torch.randn(4, generator=g, dtype=D64)
        self.t, self.s = 0.7, 0.5
        eye = torch.eye
        self.cov_z1 = self.A @ self.A.T + self.t**2 * eye(3, dtype=D64)
        self.cov_x = self.B @ self.cov_z1 @ self.B.T + self.s**2 * eye(4, dtype=D64)
        # p(z1 | x): Gaussian conditioning of the joint of (z1, x)
        gain = self.cov_z1 @ self.B.T @ torch.linalg.inv(self.cov_x)
        self.gain, self.post_cov1 = gain, self.cov_z1 - gain @ self.B @ self.cov_z1
        # p(z2 | z1): precision I + A^T A / t^2
        self.post_cov2 = torch.linalg.inv(eye(2, dtype=D64) + self.A.T @ self.A / self.t**2)

    def model(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z2 = pyro.sample("z2", dist.Normal(torch.zeros(2, dtype=D64), 1.0).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(z2 @ self.A.T + self.a, self.t).to_event(1))
            pyro.sample("x", dist.Normal(z1 @ self.B.T + self.b, self.s).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            loc1 = self.a + (x - (self.B @ self.a + self.b)) @ self.gain.T
            z1 = pyro.sample("z1", dist.MultivariateNormal(loc1, self.post_cov1))
            loc2 = ((z1 - self.a) @ self.A / self.t**2) @ self.post_cov2.T
            pyro.sample("z2", dist.MultivariateNormal(loc2, self.post_cov2))

    def exact_log_px(self, x):
        return dist.MultivariateNormal(self.B @ self.a + self.b, self.cov_x).log_prob(x)


def test_the_evaluator_gets_the_exact_marginal_of_a_two_layer_model():
    lg = TwoLayerLinearGaussian()
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(5), dtype=D64)
    ev = evaluate_dataset(lg.model, lg.guide, x, num_samples=64, ks=(1, 8), seed=0)
    torch.testing.assert_close(ev.log_px, lg.exact_log_px(x), rtol=0, atol=1e-9)
    torch.testing.assert_close(ev.elbo, lg.exact_log_px(x), rtol=0, atol=1e-9)


def test_hvae_trains_samples_evaluates_and_resumes_with_iwae(tmp_path, capsys):
    run = tmp_path / "run"
    iwae = ["--objective", "iwae", "--num-particles", "5"]
    assert (
        main(["train", "--model", "hvae", *SMALL, "--epochs", "2", *iwae, "--out", str(run)]) == 0
    )
    config = json.loads((run / "config.json").read_text())["model"]
    assert config["kind"] == "hvae" and config["z_dims"] == [4, 2]
    assert (run / "samples.png").is_file() and (run / "reconstructions.png").is_file()
    assert main(["sample", "--run", str(run), "-n", "4"]) == 0
    train = json.loads((run / "config.json").read_text())["train"]
    assert (train["objective"], train["num_particles"]) == ("iwae", 5)
    assert main(["evaluate", "--run", str(run), "--num-samples", "50", "--limit", "10"]) == 0
    report = json.loads((run / "eval_n10.json").read_text())
    assert report["description"] == "HVAE (z 4-2)"
    # it learned: an untrained decoder's logits are near 0, every pixel a fair coin
    # (log P(X) = -64 log 2 = -44.4 nats; measured -44.2 for the initial weights); two
    # epochs of IWAE-5 training gain 2.4 nats on these 10 test images (measured -42.0)
    coin_flips = -64 * math.log(2)
    assert report["summary"]["log_px"]["mean"] > coin_flips + LEARNED_NATS
    assert report["summary"]["log_px"]["mean"] > report["summary"]["elbo"]["mean"]
    assert main(["train", "--out", str(run), "--resume", "--epochs", "3", "--no-progress"]) == 0
    assert json.loads((run / "history.json").read_text())["epoch"] == [1, 2, 3]
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--gap-decomposition", "--limit", "5"]) == 2
    assert "Drop --gap-decomposition" in capsys.readouterr().err
    assert (
        main(["train", "--model", "hvae", *SMALL, "--z-dim", "3", "--out", str(tmp_path / "x")])
        == 2
    )
    err = capsys.readouterr().err
    assert "--z-dim applies to --model vae or cvae or ssvae, not to --model hvae" in err
    assert (
        main(
            [
                "train",
                "--model",
                "hvae",
                "--dataset",
                "digits",
                "--z-dims",
                "4",
                "--out",
                str(tmp_path / "y"),
            ]
        )
        == 2
    )
    assert "two latent sizes" in capsys.readouterr().err
