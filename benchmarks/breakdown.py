"""Where the time goes: one training step and one evaluator chunk, part by part.

The 784-400-20 Bernoulli VAE (``--size small``) or Burda et al.'s 784-200-200-50
(``--size burda``), weights from a fixed seed, on ``mnist5k`` digits. Each part is
timed by itself, in alternating blocks (the median of ``--repeats`` blocks per part),
so that machine load hits all parts alike; the parts that cannot be run alone are
differences of those that can:

Training step (``--batch-size`` images), the default ``fast`` engine against the
hand-written torch step of ``benchmarks/train_step.py``:

- *networks forward*: the encoder, the reparameterized sample and the decoder;
- *log-densities forward*: ``log P(x|z)``, ``log P(z)`` and ``log Q(z|x)`` from those
  outputs, by the distributions the model and guide use (by hand for torch);
- *Pyro: tracing and bookkeeping*: the whole forward of
  ``Trace_ELBO.differentiable_loss`` minus the two parts above (``poutine.trace`` and
  ``replay``, plates, ``pyro.sample``, the ELBO's sums);
- *backward*: the forward and backward pass minus the forward;
- *optimizer and the engine's step*: the whole step minus forward and backward
  (``Adam.step``, ``zero_grad``; for ours also the engine's own call);
- *data handling*: one ``mnist5k`` epoch of permutation, slicing and dynamic
  binarization, divided by its steps.

Evaluator chunk (``--chunk-pairs`` particle-data pairs: 100 images x ``pairs / 100``
particles), :func:`pyro_vae.evaluate.log_likelihood` at K = ``--num-samples``, per
chunk:

- *decoder matrix products*: ``torch.mm`` alone at the decoder's shapes, the
  matmul limit;
- *decoder, the rest*: bias and ReLU (decoder forward minus its products);
- *encoder*: the guide runs it on the images for every chunk;
- *sampling z*: the guide's ``rsample``;
- *log-densities*: the likelihood's ``log_prob`` on ``(particles, images, 784)`` logits
  and the prior's and guide's on ``z``;
- *accumulate*: the streaming ``logsumexp`` and sums of the log weights;
- *Pyro: tracing and bookkeeping, and the rest*: the chunk's time minus all of the
  above (for torch: its whole computation's time, per chunk, minus its parts). It holds
  what the parts do not show alone, such as first touches of freshly allocated
  temporaries.

The last line printed is JSON.

Usage: ``python benchmarks/breakdown.py [--size small|burda] [--threads 1]
[--batch-size 128] [--chunk-pairs 2048] [--num-samples 5000] [--repeats 7]``
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import pyro
import pyro.distributions as dist
import torch
from evaluate import hand_written  # benchmarks/evaluate.py: the same chunks by hand
from output import add_out_argument, check_out, save
from pyro.infer import Trace_ELBO
from torch.nn import functional as F
from train_step import torch_loss  # benchmarks/ is on the path of a script run from it

from pyro_vae import VAE, binarize_batch, load, make_engine
from pyro_vae.engine import adam_options
from pyro_vae.evaluate import log_likelihood
from pyro_vae.weights import Accumulator

LOG_2PI = math.log(2 * math.pi)
SIZES = {"small": (20, (400,)), "burda": (50, (200, 200))}
IMAGES = 100


def alternate(parts: dict, repeats: int, min_seconds: float = 0.05) -> dict[str, float]:
    """Median milliseconds per call of each callable, timed in alternating blocks."""
    calls = {}
    for name, fn in parts.items():  # warm-up, and calls per block of about min_seconds
        fn()
        t0 = time.perf_counter()
        fn()
        calls[name] = max(1, math.ceil(min_seconds / max(time.perf_counter() - t0, 1e-6)))
    times: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(repeats):
        for name, fn in parts.items():
            t0 = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            times[name].append((time.perf_counter() - t0) * 1e3 / calls[name])
    return {name: statistics.median(t) for name, t in times.items()}


def linear_layers(module: torch.nn.Module) -> list[torch.nn.Linear]:
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)]


def matmul_parts(decoder: torch.nn.Module, rows: int) -> tuple:
    """The decoder's matrix products at ``rows`` rows, with their inputs, and their FLOPs."""
    mats = [(torch.randn(rows, m.in_features), m.weight.detach()) for m in linear_layers(decoder)]
    flops = sum(2 * rows * w.shape[0] * w.shape[1] for _, w in mats)

    def products():
        for a, w in mats:
            torch.mm(a, w.t())

    return products, flops


def training_profile(vae: VAE, args) -> dict:
    data = load("mnist5k", binarize="static")
    x = data.x_train[: args.batch_size]
    engine = make_engine(vae, engine="fast", lr=1e-3)
    torch.manual_seed(1)
    hand = VAE(784, z_dim=vae.z_dim, hidden_dims=vae.hidden_dims)
    hand.load_state_dict(vae.state_dict())
    hand_opt = torch.optim.Adam(hand.parameters(), lr=1e-3, **adam_options(hand.parameters()))
    elbo = Trace_ELBO()

    def networks():
        loc, scale = vae.encoder(x)
        z = loc + scale * torch.randn_like(loc)
        return loc, scale, z, vae.decoder(z)

    loc, scale, z, logits = (t.detach().requires_grad_() for t in networks())

    def densities():  # the distributions the model and guide build, on the same tensors
        prior = dist.Normal(vae.prior_loc, vae.prior_scale).to_event(1)
        q = vae.guide_family.distribution(vae.encoder, (loc, scale))
        return vae.likelihood(logits).log_prob(x) + prior.log_prob(z) - q.log_prob(z)

    def hand_densities():
        eps = (z - loc) / scale
        log_px = -F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        log_pz = -0.5 * (z.pow(2) + LOG_2PI).sum()
        return log_px + log_pz - (-0.5 * (eps.pow(2) + LOG_2PI) - scale.log()).sum()

    def pyro_forward():
        with vae.outside_param_store():
            return elbo.differentiable_loss(vae.model, vae.guide, x)

    def pyro_forward_backward():
        for p in vae.parameters():
            p.grad = None
        pyro_forward().backward()

    def hand_forward_backward():
        hand_opt.zero_grad(set_to_none=True)
        torch_loss(hand, x).backward()

    def hand_step():
        hand_opt.zero_grad(set_to_none=True)
        torch_loss(hand, x).backward()
        hand_opt.step()

    steps_per_epoch = math.ceil(len(data.x_train) / args.batch_size)

    def data_epoch():
        perm = torch.randperm(len(data.x_train))
        for i in range(steps_per_epoch):
            binarize_batch(data.x_train[perm[i * args.batch_size : (i + 1) * args.batch_size]])

    with torch.no_grad():
        ms_fwd = alternate({"networks": networks}, args.repeats)
    ms = alternate(
        {
            "densities": densities,
            "hand_densities": hand_densities,
            "pyro_forward": pyro_forward,
            "pyro_forward_backward": pyro_forward_backward,
            "pyro_step": lambda: engine.step((x,), 1.0),
            "hand_forward": lambda: torch_loss(hand, x),
            "hand_forward_backward": hand_forward_backward,
            "hand_step": hand_step,
            "data_epoch": data_epoch,
        },
        args.repeats,
    )
    net = ms_fwd["networks"]
    data_ms = ms["data_epoch"] / steps_per_epoch
    rows = {
        "networks forward": (net, net),
        "log-densities forward": (ms["densities"], ms["hand_densities"]),
        "Pyro: tracing and bookkeeping": (
            ms["pyro_forward"] - net - ms["densities"],
            ms["hand_forward"] - net - ms["hand_densities"],
        ),
        "backward": (
            ms["pyro_forward_backward"] - ms["pyro_forward"],
            ms["hand_forward_backward"] - ms["hand_forward"],
        ),
        "optimizer and the engine's step": (
            ms["pyro_step"] - ms["pyro_forward_backward"],
            ms["hand_step"] - ms["hand_forward_backward"],
        ),
        "data handling": (data_ms, data_ms),
    }
    total = (ms["pyro_step"] + data_ms, ms["hand_step"] + data_ms)
    return {"rows": rows, "total": total, "ratio": ms["pyro_step"] / ms["hand_step"]}


def evaluator_profile(vae: VAE, args) -> dict:
    vae.eval()
    x = load("mnist5k", binarize="dynamic").x_test[:IMAGES]
    particles = max(1, args.chunk_pairs // IMAGES)
    rows_n = particles * IMAGES
    chunks = math.ceil(args.num_samples / particles)
    products, flops = matmul_parts(vae.decoder, rows_n)
    with torch.no_grad():
        loc, scale = vae.encoder(x)
        z = loc + scale * torch.randn(particles, *loc.shape)
        logits = vae.decoder(z)
        log_w = torch.randn(particles, IMAGES)

        def densities():
            prior = dist.Normal(vae.prior_loc, vae.prior_scale).to_event(1)
            q = vae.guide_family.distribution(vae.encoder, (loc, scale))
            return vae.likelihood(logits).log_prob(x) + prior.log_prob(z) - q.log_prob(z)

        def hand_densities():
            eps = (z - loc) / scale
            log_px = -F.binary_cross_entropy_with_logits(
                logits, x.expand_as(logits), reduction="none"
            ).sum(-1)
            log_pz = -0.5 * (z.pow(2) + LOG_2PI).sum(-1)
            return log_px + log_pz - (-0.5 * (eps.pow(2) + LOG_2PI) - scale.log()).sum(-1)

        def accumulate():
            acc = Accumulator(particles, ())
            acc.add(log_w)

        def hand_accumulate():
            part = torch.logsumexp(log_w, 0)
            torch.logaddexp(part, part)

        def sample():
            q = vae.guide_family.distribution(vae.encoder, (loc, scale))
            return q.expand((particles, IMAGES)).rsample()

        def whole():
            log_likelihood(
                vae.model, vae.guide, x, num_samples=args.num_samples, chunk_size=particles
            )

        def hand_whole():
            hand_written(vae, x, args.num_samples, chunk=particles)

        ms = alternate(
            {
                "products": products,
                "decoder": lambda: vae.decoder(z),
                "encoder": lambda: vae.encoder(x),
                "sample": sample,
                "densities": densities,
                "hand_densities": hand_densities,
                "accumulate": accumulate,
                "hand_accumulate": hand_accumulate,
                "whole": whole,
                "hand_whole": hand_whole,
            },
            args.repeats,
            min_seconds=0.2,
        )
    chunk = ms["whole"] / chunks
    measured = {
        "decoder matrix products": (ms["products"], ms["products"]),
        "decoder, the rest": (ms["decoder"] - ms["products"], ms["decoder"] - ms["products"]),
        "encoder": (ms["encoder"], ms["encoder"] / chunks),  # torch: once per batch
        "sampling z": (ms["sample"], ms["sample"]),
        "log-densities": (ms["densities"], ms["hand_densities"]),
        "accumulate": (ms["accumulate"], ms["hand_accumulate"]),
    }
    hand_chunk = ms["hand_whole"] / chunks
    rows = dict(measured)
    rows["Pyro: tracing and bookkeeping, and the rest"] = (
        chunk - sum(v[0] for v in measured.values()),
        hand_chunk - sum(v[1] for v in measured.values()),
    )
    return {
        "rows": rows,
        "total": (chunk, hand_chunk),
        "particles": particles,
        "chunks": chunks,
        "decoder_gflop_per_chunk": flops / 1e9,
        "fraction_of_matmul_limit": ms["products"] / chunk,
    }


def table(title: str, unit: str, profile: dict) -> str:
    total = profile["total"]
    lines = [
        f"| {title} | ours, {unit} | share | hand-written torch, {unit} |",
        "|---|---:|---:|---:|",
    ]
    for name, (ours, hand) in profile["rows"].items():
        lines.append(f"| {name} | {ours:.3f} | {ours / total[0]:.0%} | {hand:.3f} |")
    lines.append(f"| **total** | **{total[0]:.3f}** | 100% | **{total[1]:.3f}** |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=tuple(SIZES), default="small")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--chunk-pairs", type=int, default=2048)
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--parts", default="train,evaluate")
    add_out_argument(parser)
    args = parser.parse_args(argv)
    check_out(parser, args.out)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    pyro.enable_validation(False)
    z_dim, hidden = SIZES[args.size]
    torch.manual_seed(0)
    vae = VAE(784, z_dim=z_dim, hidden_dims=hidden)
    parts = args.parts.split(",")
    result: dict = {"size": args.size, "threads": args.threads, "torch_version": torch.__version__}
    net = f"784-{'-'.join(map(str, hidden))}-{z_dim} Bernoulli VAE, {args.threads} thread(s)"
    print(net)
    tables = []
    if "train" in parts:
        train = training_profile(vae, args)
        tables.append(
            (
                f"Training step, {net}, batch {args.batch_size} (fast engine / torch "
                f"{train['ratio']:.3f}); medians of {args.repeats} blocks.",
                table("part of a training step", "ms", train),
            )
        )
        result["train"] = {**train, "batch_size": args.batch_size}
    if "evaluate" in parts:
        ev = evaluator_profile(vae, args)
        tables.append(
            (
                f"Evaluator chunk, {net}: {ev['particles']} particles x {IMAGES} images, "
                f"{ev['chunks']} chunks for K = {args.num_samples}; decoder matmul limit "
                f"reached: {ev['fraction_of_matmul_limit']:.0%}; medians of {args.repeats} "
                "blocks.",
                table("part of an evaluator chunk", "ms", ev),
            )
        )
        result["evaluate"] = ev
    for caption, text in tables:
        print(f"\n{caption}\n{text}")
    save(args.out, "breakdown.py", argv, result, tables)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
