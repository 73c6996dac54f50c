"""VQ-VAE as the notes derive it: a constant KL term, a one-hot posterior, and what they cost.

The notes (section 6 of the Chinese primer in the sources) make z one of k codebook
vectors, q(z|x) one-hot on the code with the largest dot product with Enc(x), p(z)
uniform and p(x|z) = N(Dec(V[z]), I). Then KL(q || p) = log k for every x, and
maximizing the ELBO is minimizing the squared error ||x - Dec(V[z])||^2. This script
trains such models on mnist5k (grey levels in [0, 1], the same split, budget and seed for
every row) and measures, on TEST_IMAGES evenly spaced test images:

- the squared reconstruction error, the ELBO (log p(x|V[z]) - m log k, exact: the guide
  is one point) and log P(X) (exact by summing the k^m code arrays out where
  k^m <= 4,096, else importance-sampled with K samples from a softmax proposal);
- the gap log P(X) - ELBO = D[q(z|X) || P(z|X)] = -log P(z*|X), and how often the
  guide's code is the one that explains X best (m = 1);
- the codebook's use: perplexity exp(H) of the code frequencies and dead codes;
- samples from the uniform prior.

Rows: the notes' model for k = 8, 64, 512; at k = 64, the notes' loss alone (no
codebook or commitment term), the paper's nearest-code selection, and moving averages;
m = 2 and 4 slots; and the Bernoulli likelihood on binarized images, comparable with
the VAE's log P(X).

Usage: ``python experiments/vqvae.py [--quick] [--out results/vqvae]``
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import common
import pyro
import torch

from pyro_vae import Bernoulli, Gaussian
from pyro_vae import data as data_mod
from pyro_vae.evaluate import evaluate_dataset, mean_and_stderr
from pyro_vae.models import VQVAE
from pyro_vae.models.vqvae import MAX_ENUMERATION
from pyro_vae.plots import labelled_rows_figure
from pyro_vae.splits import spread_subset
from pyro_vae.tables import markdown_table

#: for `pyro-vae reproduce`: the section title on the results page, the discussion page
#: in docs/, the expected wall minutes of the full run on 2 CPU cores, and the position
#: on the results page
TITLE = "VQ-VAE as the notes derive it"
PAGE = "vqvae.md"
MINUTES = 8
ORDER = 13

TEST_IMAGES = 500
CODE_DIM = 16


@dataclass(frozen=True)
class Row:
    """One VQ-VAE of the comparison."""

    label: str
    codes: int
    slots: int = 1
    select: str = "dot"
    ema_decay: float | None = None
    terms: bool = True  # the paper's codebook and commitment terms
    bernoulli: bool = False  # Bernoulli on binarized images instead of N(., I) on grey levels

    def build(self, x_dim: int, image_shape, hidden_dims) -> VQVAE:
        return VQVAE(
            x_dim,
            codes=self.codes,
            slots=self.slots,
            code_dim=CODE_DIM,
            hidden_dims=hidden_dims,
            likelihood=Bernoulli() if self.bernoulli else Gaussian(sigma=1.0),
            image_shape=image_shape,
            select=self.select,
            ema_decay=self.ema_decay,
            commitment=0.25 if self.terms else 0.0,
            codebook_weight=1.0 if self.terms else 0.0,
        )


ROWS = (
    Row("notes, k = 8", 8),
    Row("notes, k = 64", 64),
    Row("notes, k = 512", 512),
    Row("k = 64, the notes' loss alone", 64, terms=False),
    Row("k = 64, nearest code", 64, select="distance"),
    Row("k = 64, nearest code, moving averages", 64, select="distance", ema_decay=0.99),
    Row("k = 64, m = 2", 64, slots=2),
    Row("k = 64, m = 4", 64, slots=4),
    Row("Bernoulli, k = 64, nearest code", 64, select="distance", bernoulli=True),
    Row("Bernoulli, k = 64, m = 4, nearest code", 64, slots=4, select="distance", bernoulli=True),
)
QUICK_ROWS = (
    Row("notes, k = 4", 4),
    Row("k = 4, the notes' loss alone", 4, terms=False),
    Row("k = 4, nearest code, moving averages", 4, select="distance", ema_decay=0.9),
    Row("k = 8, m = 2", 8, slots=2),
    Row("k = 16, m = 4", 16, slots=4),  # 65,536 code arrays: importance-sampled
    Row("Bernoulli, k = 4, m = 4, nearest code", 4, slots=4, select="distance", bernoulli=True),
)


@torch.no_grad()
def score(model: VQVAE, x: torch.Tensor, num_samples: int, seed: int) -> dict:
    """Everything a row reports, per test image where it is per image."""
    e = model.encode(x)
    chosen = model.quantizer.select(e)  # (N, m)
    recon = model.reconstruct(x)
    out = {
        "squared_error": mean_and_stderr(((x - recon) ** 2).sum(-1)),
        "elbo_values": model.elbo(x),
        "usage": model.codebook_usage(x),
        "kl": model.kl,
    }
    if model.codes**model.slots <= MAX_ENUMERATION:
        out["log_px_values"] = model.exact_log_likelihood(x)
        out["method"] = "exact"
    else:
        ev = evaluate_dataset(
            model.model, model.proposal, x, num_samples=num_samples, ks=(1,), seed=seed
        )
        out["log_px_values"] = ev.log_px
        out["method"] = f"IS, K = {num_samples} (ESS {float(ev.ess.mean()):.0f})"
    if model.slots == 1:  # does the guide pick the code that explains x best?
        codes = model.quantizer.codebook.unsqueeze(1)  # (k, 1, D)
        per_code = model.likelihood(model.decoder(codes)).log_prob(x)  # (k, N)
        out["best_code_share"] = float((per_code.argmax(0) == chosen[:, 0]).double().mean())
    return out


def main(argv=None) -> dict:
    """Train and score every row; returns the results written to ``results.json``."""
    args = common.parser("vqvae", __doc__.splitlines()[0]).parse_args(argv)
    budget = common.budget_from(args)
    if not args.quick:
        budget.test_images = min(budget.test_images, TEST_IMAGES)
    grey = data_mod.load("mnist5k", binarize="none")
    binary = data_mod.load("mnist5k", binarize="dynamic")
    index = spread_subset(len(grey.x_test), budget.test_images)
    rows, samples = [], []
    for row in QUICK_ROWS if args.quick else ROWS:
        dataset = binary if row.bernoulli else grey
        pyro.set_rng_seed(budget.seed)
        model = row.build(dataset.x_dim, dataset.image_shape, budget.hidden_dims)
        model, history, _ = common.train_model(model, dataset, budget)
        pyro.set_rng_seed(budget.seed)
        s = score(model, dataset.x_test[index], budget.num_samples, budget.seed)
        elbo, log_px = s.pop("elbo_values"), s.pop("log_px_values")
        rows.append(
            {
                "label": row.label,
                "codes": row.codes,
                "slots": row.slots,
                "select": row.select,
                "ema_decay": row.ema_decay,
                "terms": row.terms,
                "likelihood": model.likelihood.config(),
                **s,
                "elbo": mean_and_stderr(elbo),
                "log_px": mean_and_stderr(log_px),
                "gap": mean_and_stderr(log_px - elbo),
                "epoch_seconds": sum(history.seconds) / len(history.seconds),
            }
        )
        gen = torch.Generator().manual_seed(budget.seed)
        samples.append((row.label, model.sample(12, generator=gen)))
        print(
            f"{row.label}: squared error {s['squared_error']['mean']:.2f}, ELBO "
            f"{rows[-1]['elbo']['mean']:.2f}, log P(X) {rows[-1]['log_px']['mean']:.2f} "
            f"({s['method']}), perplexity {s['usage']['perplexity']:.1f}",
            flush=True,
        )
    results = {
        "experiment": "vqvae",
        "budget": budget.to_dict(),
        "test_images": len(index),
        "code_dim": CODE_DIM,
        "rows": rows,
    }
    figures = {
        "samples.png": labelled_rows_figure(
            samples, grey.image_shape, "samples: codes drawn uniformly, mean of p(x|z)"
        ),
        "codebook.png": usage_figure(results),
    }
    return common.finish(args.out, results, table(results), figures)


def usage_figure(results: dict):
    """The code frequencies of every row, sorted, on a log scale."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    for r in results["rows"]:
        freq = sorted((f for f in r["usage"]["frequencies"] if f > 0), reverse=True)
        ax.plot(range(1, len(freq) + 1), freq, marker=".", label=r["label"])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("code, by frequency (dead codes left out)")
    ax.set_ylabel("share of test slots")
    ax.set_title("how the guide uses the codebook", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def table(results: dict) -> str:
    b = results["budget"]
    lines = [
        [
            r["label"],
            f"{r['squared_error']['mean']:.2f}",
            f"{r['elbo']['mean']:.2f}",
            f"{r['log_px']['mean']:.2f}",
            r["method"],
            common.mean_se(r["gap"]),
            f"{r['kl']:.2f}",
            "n/a" if "best_code_share" not in r else f"{r['best_code_share']:.2f}",
            f"{r['usage']['perplexity']:.1f}",
            f"{r['usage']['dead_codes']} / {r['codes']}",
        ]
        for r in results["rows"]
    ]
    header = [
        "model",
        "squared error",
        "ELBO",
        "log P(X)",
        "log P(X) by",
        "gap",
        "m log k",
        "best code",
        "perplexity",
        "dead codes",
    ]
    return (
        f"\nmnist5k, encoder 784-{b['hidden_dims'][0]}-(m x {results['code_dim']}), mirrored "
        f"decoder; N(Dec(V[z]), I) on grey levels unless the row says Bernoulli (binarized "
        f"images); {b['epochs']} epochs, seed {b['seed']}, one run per row; "
        f"{results['test_images']} evenly spaced test images. Nats per image (the squared "
        "error summed over pixels); gap = log P(X) - ELBO ± paired s.e.; 'best code': the "
        "share of images whose chosen code has the highest p(x|V[z]).\n\n"
        + markdown_table(header, lines)
        + "\n"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
