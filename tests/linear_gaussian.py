"""Closed-form oracles for the estimator tests: a linear-Gaussian model and Gaussian KLs.

``z ~ N(0, I_d)``, ``x | z ~ N(W z + b, s^2 I_D)`` has

- marginal ``log p(x) = log N(x; b, W W^T + s^2 I)``;
- posterior ``N(m(x), Lambda^-1)`` with precision ``Lambda = I + W^T W / s^2`` and mean
  ``m(x) = Lambda^-1 W^T (x - b) / s^2``;
- best diagonal Gaussian (minimizing ``KL(q || p(z|x))``): mean ``m(x)`` and variances
  ``1 / Lambda_ii`` (Bishop, PRML section 10.1.2), at ``KL = (sum_i log Lambda_ii -
  log det Lambda) / 2``, zero exactly when ``Lambda`` is diagonal (orthogonal columns of W).

Not a test module (no ``test_`` prefix): the estimator tests import it.
"""

import pyro
import pyro.distributions as dist
import torch

D64 = torch.float64


class LinearGaussian:
    """z ~ N(0, I_d), x | z ~ N(W z + b, s^2 I_D): log p(x) = log N(x; b, W W^T + s^2 I).

    :param W: ``(D, d)`` loading matrix; random (seeded) when ``None``.
    :param float collinear: pulls random columns together, for a correlated posterior
        that a mean-field guide cannot match.
    """

    def __init__(self, d=2, dim_x=4, s=0.5, seed=0, collinear=0.0, W=None):
        g = torch.Generator().manual_seed(seed)
        self.s = s
        if W is None:
            W = torch.randn(dim_x, d, generator=g, dtype=D64)
            W[:, 1:] = (1 - collinear) * W[:, 1:] + collinear * W[:, :1]
        self.W = W.to(D64)
        self.d = self.W.shape[1]
        self.b = torch.randn(self.W.shape[0], generator=g, dtype=D64)
        self.precision = torch.eye(self.d, dtype=D64) + self.W.T @ self.W / s**2
        self.cov = torch.linalg.inv(self.precision)
        # the KL-optimal mean-field q: variances 1 / Lambda_ii (not diag of the covariance)
        self.mean_field_scale = self.precision.diagonal().rsqrt()

    def sample_x(self, n, seed=1):
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.d, generator=g, dtype=D64)
        return z @ self.W.T + self.b + self.s * torch.randn(n, len(self.b), generator=g, dtype=D64)

    def exact_log_px(self, x):
        cov = self.W @ self.W.T + self.s**2 * torch.eye(len(self.b), dtype=D64)
        return dist.MultivariateNormal(self.b, cov).log_prob(x)

    def posterior_mean(self, x):
        return (x - self.b) @ self.W / self.s**2 @ self.cov

    def mean_field_kl(self):
        """``KL(q_mf || p(z|x))`` of the best diagonal Gaussian; the same for every x."""
        return 0.5 * (self.precision.diagonal().log().sum() - torch.logdet(self.precision))

    def model(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(self.d, dtype=D64), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.s).to_event(1), obs=x)

    def exact_guide(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.MultivariateNormal(self.posterior_mean(x), self.cov))

    def mean_field_guide(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            loc = self.posterior_mean(x)
            pyro.sample("z", dist.Normal(loc, self.mean_field_scale).to_event(1))


def gaussian_kl(q_loc, q_cov, p_loc, p_cov):
    """``KL(N(q_loc, q_cov) || N(p_loc, p_cov))``, batched over leading dims."""
    d = q_loc.shape[-1]
    diff = (p_loc - q_loc).unsqueeze(-1)
    return 0.5 * (
        torch.linalg.solve(p_cov, q_cov).diagonal(dim1=-2, dim2=-1).sum(-1)
        + (diff.mT @ torch.linalg.solve(p_cov, diff)).squeeze((-1, -2))
        - d
        + torch.logdet(p_cov)
        - torch.logdet(q_cov)
    )


def log_weight_variance(q_loc, q_cov, p_loc, p_precision):
    """``Var_q[log p(z|x) - log q(z)]`` for Gaussian q and posterior p, batched.

    With ``u = z - q_loc ~ N(0, Q)`` and ``delta = q_loc - p_loc`` the log weight is
    ``u^T M u - (P delta)^T u + const`` with ``M = (Q^-1 - P) / 2``; a Gaussian quadratic
    form has variance ``2 tr((M Q)^2)``, the linear term ``delta^T P Q P delta``, and
    the two are uncorrelated (odd moments of u vanish).
    """
    m_q = 0.5 * (torch.eye(q_cov.shape[-1], dtype=q_cov.dtype) - p_precision @ q_cov)
    pd = ((q_loc - p_loc) @ p_precision).unsqueeze(-1)  # (..., d, 1): P delta
    quadratic = 2 * (m_q @ m_q).diagonal(dim1=-2, dim2=-1).sum(-1)
    return quadratic + (pd.mT @ q_cov @ pd).squeeze((-1, -2))


def gaussian_weight_moment(n, q_loc, q_cov, p_loc, p_cov):
    """``E_q[(p/q)^n] = int p^n q^(1-n) dz`` for Gaussians p and q; ``inf`` where it diverges.

    Completing the square: with ``A = n P^-1 - (n-1) Q^-1`` (must be positive definite)
    and ``c = n P^-1 p_loc - (n-1) Q^-1 q_loc``, the integral is
    ``|P|^(-n/2) |Q|^((n-1)/2) |A|^(-1/2) exp(c^T A^-1 c / 2 - n p^T P^-1 p / 2
    + (n-1) q^T Q^-1 q / 2)``; the powers of 2 pi cancel. Unbatched.
    """
    p_prec, q_prec = torch.linalg.inv(p_cov), torch.linalg.inv(q_cov)
    a = n * p_prec - (n - 1) * q_prec
    if torch.linalg.eigvalsh(a).min() <= 0:
        return torch.tensor(float("inf"), dtype=a.dtype)
    c = n * p_prec @ p_loc - (n - 1) * q_prec @ q_loc
    log_m = (
        -0.5 * n * torch.logdet(p_cov)
        + 0.5 * (n - 1) * torch.logdet(q_cov)
        - 0.5 * torch.logdet(a)
        + 0.5 * c @ torch.linalg.solve(a, c)
        - 0.5 * n * p_loc @ p_prec @ p_loc
        + 0.5 * (n - 1) * q_loc @ q_prec @ q_loc
    )
    return log_m.exp()


class TwoLayer:
    """z1 ~ N(0, I), z2 | z1 ~ N(A z1, t^2 I), x | z2 ~ N(W z2 + b, s^2 I).

    Marginal ``N(b, W (A A^T + t^2 I) W^T + s^2 I)``; the exact guide samples
    ``p(z1 | x)`` (x | z1 ~ N(W A z1 + b, t^2 W W^T + s^2 I)) and then ``p(z2 | z1, x)``.
    """

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.A = torch.randn(3, 2, generator=g, dtype=D64)
        self.W = torch.randn(5, 3, generator=g, dtype=D64)
        self.b = torch.randn(5, generator=g, dtype=D64)
        self.t, self.s = 0.7, 0.4
        i3, i5 = torch.eye(3, dtype=D64), torch.eye(5, dtype=D64)
        self.M = self.W @ self.A
        self.S = self.t**2 * self.W @ self.W.T + self.s**2 * i5
        self.z1_cov = torch.linalg.inv(
            torch.eye(2, dtype=D64) + self.M.T @ torch.linalg.solve(self.S, self.M)
        )
        self.z2_cov = torch.linalg.inv(i3 / self.t**2 + self.W.T @ self.W / self.s**2)
        self.marginal = dist.MultivariateNormal(
            self.b, self.W @ (self.A @ self.A.T + self.t**2 * i3) @ self.W.T + self.s**2 * i5
        )

    def model(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z1 = pyro.sample("z1", dist.Normal(torch.zeros(2, dtype=D64), 1.0).to_event(1))
            z2 = pyro.sample("z2", dist.Normal(z1 @ self.A.T, self.t).to_event(1))
            pyro.sample("x", dist.Normal(z2 @ self.W.T + self.b, self.s).to_event(1), obs=x)

    def exact_guide(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z1_mean = torch.linalg.solve(self.S, (x - self.b).T).T @ self.M @ self.z1_cov
            z1 = pyro.sample("z1", dist.MultivariateNormal(z1_mean, self.z1_cov))
            z2_mean = (z1 @ self.A.T / self.t**2 + (x - self.b) @ self.W / self.s**2) @ self.z2_cov
            pyro.sample("z2", dist.MultivariateNormal(z2_mean, self.z2_cov))
