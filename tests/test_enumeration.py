"""The evaluator sums a discrete latent site out exactly where the guide leaves it out:
against the closed-form marginal of a linear-Gaussian model with a discrete mixture
component, and a brute-force sum over the classes."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vae.evaluate import log_likelihood

C, D, Z = 3, 4, 2
SIGMA = 0.7


@pytest.fixture(scope="module")
def mixture():
    """z ~ N(0, I), y ~ Categorical(pi), x | y, z ~ N(W_y z + b_y, s^2 I): p(x) is the
    mixture sum_y pi_y N(b_y, W_y W_y^T + s^2 I), and p(z|x) the mixture over y of the
    Gaussian posteriors p(z|x, y), weighted by p(y|x)."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(C, D, Z, generator=g, dtype=torch.float64)
    b = torch.randn(C, D, generator=g, dtype=torch.float64)
    pi = torch.softmax(torch.randn(C, generator=g, dtype=torch.float64), -1)
    x = torch.randn(6, D, generator=g, dtype=torch.float64) * 2
    cov = W @ W.transpose(-1, -2) + SIGMA**2 * torch.eye(D, dtype=torch.float64)
    marginals = dist.MultivariateNormal(b, cov).log_prob(x[:, None])  # (N, C): log p(x|y)
    exact = torch.logsumexp(pi.log() + marginals, -1)

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(Z, dtype=torch.float64), 1.0).to_event(1))
            y = pyro.sample("y", dist.Categorical(pi))
            loc = (W[y] @ z.unsqueeze(-1)).squeeze(-1) + b[y]
            pyro.sample("x", dist.Normal(loc, SIGMA).to_event(1), obs=x)

    def posterior(x):  # p(z|x): batch (N,), a mixture over y of Gaussians in z
        precision = torch.eye(Z, dtype=torch.float64) + W.transpose(-1, -2) @ W / SIGMA**2
        cov_z = torch.linalg.inv(precision)  # (C, Z, Z)
        rhs = (W.transpose(-1, -2)[None] @ (x[:, None] - b)[..., None]) / SIGMA**2
        mean = (cov_z[None] @ rhs)[..., 0]  # (N, C, Z)
        weights = pi.log() + marginals  # log p(y, x)
        parts = dist.MultivariateNormal(mean, cov_z[None].expand(len(x), -1, -1, -1))
        return dist.MixtureSameFamily(dist.Categorical(logits=weights), parts)

    return model, posterior, x, exact, (W, b, pi)


def test_the_exact_posterior_as_proposal_gives_the_closed_form_marginal(mixture):
    """With z from p(z|x) and y summed out, every weight sum_y p(x, y, z) / p(z|x) is
    p(x): the estimate must be the closed form to float64 rounding, whatever K."""
    model, posterior, x, exact, _ = mixture

    def proposal(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", posterior(x))

    result = log_likelihood(model, proposal, x, num_samples=7)
    np.testing.assert_allclose(result.log_px, exact, atol=1e-8)
    np.testing.assert_allclose(result.elbo, exact, atol=1e-8)  # every weight equal


def test_a_broad_proposal_sums_the_classes_as_a_brute_force_sum_does(mixture):
    """A proposal far from the posterior: the evaluator's weights must be the sum over
    the classes of p(y) p(z) p(x|y, z) / q(z), computed here by hand on the same z."""
    model, _, x, _, (W, b, pi) = mixture
    scale = 1.5
    drawn = []

    def proposal(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            q = dist.Normal(torch.zeros(x.shape[0], Z, dtype=torch.float64), scale)
            drawn.append(pyro.sample("z", q.to_event(1)))

    from pyro_vae.weights import log_weight_chunks

    (chunk,) = log_weight_chunks(model, proposal, (x,), {}, 5, "guide", None, 1)
    z = drawn[-1]  # (5, N, Z): the particles of the chunk
    log_q = dist.Normal(0.0, scale).log_prob(z).sum(-1)
    log_prior = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
    per_class = []
    for y in range(C):
        loc = z @ W[y].T + b[y]
        per_class.append(pi[y].log() + dist.Normal(loc, SIGMA).log_prob(x).sum(-1))
    expected = log_prior + torch.logsumexp(torch.stack(per_class), 0) - log_q
    np.testing.assert_allclose(chunk, expected, atol=1e-10)


def test_a_discrete_site_in_a_nested_plate_is_refused():
    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 1), 1.0).to_event(1))
            with pyro.plate("pixels", x.shape[1], dim=-2):
                pyro.sample("y", dist.Bernoulli(0.5))

    def guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 1), 1.0).to_event(1))

    with pytest.raises(ValueError, match="a discrete one in the 'data' plate alone"):
        log_likelihood(model, guide, torch.zeros(3, 2), num_samples=2)
