"""The notes' "AE" section: fix the encoder's variance and the ELBO becomes an autoencoder loss.

With ``Q(z|X) = N(mu(X), s^2 I)`` and ``s`` fixed, the KL term is exactly

    D[Q(z|X) || N(0, I)] = ||mu(X)||^2 / 2 + (d / 2) (s^2 - 1 - 2 log s),

so the negative ELBO is ``E_Q[-log P(X|z)] + ||mu(X)||^2 / 2`` plus a constant: the
reconstruction loss of an autoencoder whose code is jittered by noise of scale s, plus
an L2 penalty on the code. At s = 1 (the notes' assumption) the jitter is as wide as
the prior; as s -> 0 it is a plain autoencoder with an L2 penalty, and nothing
teaches the decoder what to do with the prior samples between the codes.

For s in {1, 0.1, 0.01} and the learned scale of the ordinary VAE, on the same
mnist5k split and budget (dynamic binarization, Bernoulli, 784-400-20): the terms
of the objective on the test split (reconstruction, L2 penalty, constant), the test
ELBO, log P(X) importance-sampled with each model's own Q and with the prior, active
units, and samples from the prior side by side.

Usage: ``python experiments/autoencoder_limit.py [--quick] [--out results/autoencoder_limit]``
"""

from __future__ import annotations

import math
import sys

import common
import pyro
import pyro.distributions as dist
import torch

from pyro_vae import VAE
from pyro_vae import data as data_mod
from pyro_vae.diagnostics import ACTIVE_UNIT_THRESHOLD, active_units, kl_to_standard_normal
from pyro_vae.evaluate import evaluate_dataset, mean_and_stderr
from pyro_vae.plots import labelled_rows_figure
from pyro_vae.splits import spread_subset
from pyro_vae.tables import markdown_table

#: for `pyro-vae reproduce`: the section title on the results page, the discussion page
#: in docs/, the expected wall minutes of the full run on 2 CPU cores, and the position
#: on the results page
TITLE = "A fixed encoder variance: the autoencoder limit"
PAGE = "autoencoder_limit.md"
MINUTES = 12
ORDER = 8

SCALES = (1.0, 0.1, 0.01)


class FixedScaleVAE(VAE):
    """A VAE whose guide is ``N(mu(X), s^2 I)`` with ``s`` fixed: only the mean is learned.

    :param float fixed_scale: s.
    """

    def __init__(self, x_dim: int, *, fixed_scale: float, **kwargs) -> None:
        super().__init__(x_dim, **kwargs)
        self.fixed_scale = float(fixed_scale)

    def guide(self, x: torch.Tensor) -> None:
        """``Q(z|x) = N(mu(x), s^2 I)``."""
        self.pyro_module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            loc, _ = self.encoder(x)
            pyro.sample("z", dist.Normal(loc, self.fixed_scale).expand(loc.shape).to_event(1))


def kl_constant(z_dim: int, s: float) -> float:
    """``(d / 2) (s^2 - 1 - 2 log s)``: the KL term of ``N(mu, s^2 I)`` less ``||mu||^2 / 2``."""
    return 0.5 * z_dim * (s**2 - 1 - 2 * math.log(s))


@torch.no_grad()
def objective_terms(vae, x: torch.Tensor, s: float | None, num_particles: int = 10) -> dict:
    """Per test image: reconstruction ``E_Q[-log P(x|z)]``, L2 penalty ``||mu||^2 / 2``, the
    KL constant, and their sum, the negative ELBO with the KL term in closed form."""
    loc, scale = vae.encoder(x)
    if s is not None:
        scale = torch.full_like(loc, s)
    z = loc + scale * torch.randn(num_particles, *loc.shape)
    reconstruction = -vae.likelihood(vae.decoder(z)).log_prob(x).mean(0)
    l2 = 0.5 * (loc**2).sum(-1)
    # the KL term less the L2 penalty: the KL of N(0, scale^2), a constant when s is fixed
    constant = kl_to_standard_normal(torch.zeros_like(loc), scale).sum(-1)
    return {
        "reconstruction": reconstruction,
        "l2_penalty": l2,
        "kl_constant": constant,
        "negative_elbo": reconstruction + l2 + constant,
    }


def active_threshold(s: float | None) -> float:
    """The activity ``Var_x(mu_d)`` above which a unit counts as active: Burda et al.'s 0.01
    for a learned scale; with a fixed scale s, ``min(0.01, s^2)``, so that an active unit's
    code moves by more than the encoder's own noise."""
    return ACTIVE_UNIT_THRESHOLD if s is None else min(ACTIVE_UNIT_THRESHOLD, s**2)


def main(argv=None) -> dict:
    """Train every variant; returns the results written to ``results.json``."""
    args = common.parser("autoencoder_limit", __doc__.splitlines()[0]).parse_args(argv)
    budget = common.budget_from(args)
    dataset = data_mod.load("mnist5k", binarize="dynamic")
    rows, sample_rows = [], []
    x = dataset.x_test[spread_subset(len(dataset.x_test), budget.test_images)]
    for s in (None, *SCALES):
        label = "VAE, learned scale" if s is None else f"fixed s = {s:g}"
        if s is None:
            vae, _, seconds = common.train_vae(dataset, {"name": "bernoulli"}, budget)
        else:
            vae, _, seconds = common.train_vae(
                dataset,
                {"name": "bernoulli"},
                budget,
                vae_class=FixedScaleVAE,
                vae_options={"fixed_scale": s},
            )
        pyro.set_rng_seed(budget.seed)
        evaluation = evaluate_dataset(
            vae.model, vae.guide, x, num_samples=budget.num_samples, ks=(1,)
        )
        guided = evaluation.summary()
        prior = evaluate_dataset(
            vae.model, None, x, num_samples=budget.num_samples, ks=(1,), proposal="prior"
        ).summary()
        torch.manual_seed(budget.seed)
        terms = objective_terms(vae, x, s)
        with torch.no_grad():
            loc = vae.encoder(x)[0]  # (N, z_dim): the posterior means, the codes
        rows.append(
            {
                "scale": s,
                "label": label,
                "terms": {name: mean_and_stderr(v) for name, v in terms.items()},
                # closed-form KL against the evaluator's sampled ELBO, paired per image:
                # two estimates of one number from independent samples
                "closed_form_minus_sampled": mean_and_stderr(
                    -terms["negative_elbo"] - evaluation.elbo
                ),
                "elbo": guided["elbo"],
                "log_px": guided["log_px"],
                "ess": guided["ess"],
                "log_px_prior": prior["log_px"],
                "active_units": active_units(loc, active_threshold(s)).count,
                "train_seconds": seconds,
            }
        )
        with torch.no_grad():
            gen = torch.Generator().manual_seed(budget.seed)
            sample_rows.append((label, vae.sample(12, generator=gen)))
        print(f"{label}: ELBO {guided['elbo']['mean']:.2f}", flush=True)
    results = {"experiment": "autoencoder_limit", "budget": budget.to_dict(), "rows": rows}
    return common.finish(
        args.out,
        results,
        table(results),
        {
            "samples.png": labelled_rows_figure(
                sample_rows,
                dataset.image_shape,
                "samples from the prior: z ~ N(0, I), mean of P(X|z)",
            )
        },
    )


def table(results: dict) -> str:
    b = results["budget"]
    header = [
        "encoder scale",
        "reconstruction",
        "L2 penalty ||mu||^2/2",
        "KL constant",
        "-ELBO",
        "log P(X), z from Q",
        "log P(X), z from the prior",
        "mean ESS (Q)",
        "active units",
    ]
    rows = [
        [
            r["label"],
            *(
                f"{r['terms'][name]['mean']:.2f}"
                for name in ("reconstruction", "l2_penalty", "kl_constant", "negative_elbo")
            ),
            f"{r['log_px']['mean']:.2f}",
            f"{r['log_px_prior']['mean']:.2f}",
            f"{r['ess']['mean']:.1f}",
            r["active_units"],
        ]
        for r in results["rows"]
    ]
    return (
        f"\nmnist5k (dynamic binarization, Bernoulli, 784-{b['hidden_dims'][0]}-{b['z_dim']}), "
        f"{b['epochs']} epochs, seed {b['seed']}, one run per row; {b['test_images']} test "
        f"images, K = {b['num_samples']}; nats per image (mean). -ELBO = reconstruction + "
        "L2 penalty + constant, the KL term in closed form; a unit is active if the variance over "
        "images of its code exceeds min(0.01, s^2).\n\n" + markdown_table(header, rows) + "\n"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
