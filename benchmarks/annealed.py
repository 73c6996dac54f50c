"""Speed of annealed importance sampling, beside a hand-written torch AIS and the matmul limit.

Imported by ``benchmarks/evaluate.py`` (``--ais-steps``), which runs :func:`ais_case` for
every network size and thread count it times; ``python benchmarks/annealed.py`` runs it
alone. Three variants alternate over blocks of images, so that machine load hits them
alike; each one's time per image is the median over the blocks:

- ``ours``: :func:`pyro_vae.ais.ais_dataset` from the guide, ``C`` chains per image and
  every image of a block in one batch, each image on its own random streams;
- ``torch``: the same maths written out in torch for the diagonal-Gaussian VAE: the same
  schedule, leapfrog steps, accept/reject per chain and step-size adaptation, the
  densities as ``binary_cross_entropy_with_logits`` and Gaussian formulas, gradients by
  ``torch.autograd.grad``, noise from torch's global generator;
- ``limit``: the decoder's matrix products alone, forward and back to its input, for the
  ``T + (T - 1) L`` gradient evaluations of a run, at the same batch shapes: the time
  AIS would take doing nothing but its largest unavoidable work. The *fraction of the
  matmul limit* is this time over ``ours``'s.
"""

from __future__ import annotations

import math
import statistics
import time

import torch
from torch.nn import functional as F

from pyro_vae.ais import ADAPT_RATE, STEP_SIZE, STEP_SIZE_BOUNDS, TARGET_ACCEPT, ais_dataset
from pyro_vae.ais import schedule as ais_schedule

LOG_2PI = math.log(2 * math.pi)


def ours(vae, x, steps: int, chains: int, leapfrog: int) -> torch.Tensor:
    result = ais_dataset(
        vae.model,
        vae.guide,
        x,
        seed=0,
        num_steps=steps,
        num_chains=chains,
        leapfrog_steps=leapfrog,
        points_per_batch=len(x),
    )
    return result.log_px


def hand_written(vae, x, steps: int, chains: int, leapfrog: int) -> torch.Tensor:
    """AIS from the diagonal guide, written out in torch; ``log P(x)`` per image."""
    betas = ais_schedule(steps).tolist()
    with torch.no_grad():
        loc, scale = vae.encoder(x)  # (B, z)
    target = x.expand(chains, *x.shape)  # (C, B, D)

    def densities(z):  # log q(z | x) and log p(x, z), (C, B)
        log_q = (-0.5 * ((z - loc) / scale).square() - scale.log() - 0.5 * LOG_2PI).sum(-1)
        logits = vae.decoder(z)
        log_lik = -F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)
        return log_q, log_lik + (-0.5 * z.square() - 0.5 * LOG_2PI).sum(-1)

    def energy(z, beta):  # potential, its gradient, and the two densities
        z = z.detach().requires_grad_(True)
        log_q, log_joint = densities(z)
        u = -((1 - beta) * log_q + beta * log_joint)
        (grad,) = torch.autograd.grad(u.sum(), z)
        return u.detach(), grad, log_q.detach(), log_joint.detach()

    z = loc + scale * torch.randn(chains, *loc.shape)  # (C, B, z)
    step = torch.full((1, x.shape[0], 1), STEP_SIZE)
    low, high = STEP_SIZE_BOUNDS
    log_w = torch.zeros(chains, x.shape[0])
    for t in range(1, steps + 1):
        beta = betas[t]
        if t == steps:
            with torch.no_grad():
                log_q, log_joint = densities(z)
            log_w += (beta - betas[t - 1]) * (log_joint - log_q)
            break
        u0, grad, log_q, log_joint = energy(z, beta)
        log_w += (beta - betas[t - 1]) * (log_joint - log_q)
        r0 = torch.randn_like(z)
        r = r0 - 0.5 * step * grad
        proposal = z
        for i in range(leapfrog):
            proposal = proposal + step * r
            u1, grad1, _, _ = energy(proposal, beta)
            r = r - (step if i < leapfrog - 1 else 0.5 * step) * grad1
        log_accept = u0 + 0.5 * r0.square().sum(-1) - u1 - 0.5 * r.square().sum(-1)
        log_accept = torch.nan_to_num(log_accept, nan=-math.inf).clamp(max=0)
        accept = torch.rand_like(log_accept).log() < log_accept
        z = torch.where(accept.unsqueeze(-1), proposal, z).detach()
        rate = log_accept.exp().mean(0)
        step = (step * (ADAPT_RATE * (rate - TARGET_ACCEPT)).exp().view(1, -1, 1)).clamp(low, high)
    return torch.logsumexp(log_w, 0) - math.log(chains)


def matmul_limit(vae, rows: int):
    """``(limit, gflop_per_pass)``: ``limit(steps, leapfrog)`` runs the decoder's matrix
    products for the gradient evaluations of one AIS run on ``rows`` chain-image pairs:
    forward, and back to the input (no weight gradients)."""
    layers = [m for m in vae.decoder.modules() if isinstance(m, torch.nn.Linear)]
    forward = [(torch.randn(rows, m.in_features), m.weight.detach()) for m in layers]
    backward = [(torch.randn(rows, m.out_features), m.weight.detach()) for m in layers]
    flops = sum(2 * rows * w.shape[0] * w.shape[1] for _, w in forward)  # one direction

    def limit(steps: int, leapfrog: int) -> None:
        for _ in range(steps + (steps - 1) * leapfrog):
            for a, w in forward:
                torch.mm(a, w.t())
            for g, w in backward:
                torch.mm(g, w)

    return limit, 2 * flops / 1e9


def ais_case(vae, x, threads: int, steps: int, chains: int, leapfrog: int, block: int) -> dict:
    """Time the three variants alternately over blocks of ``block`` images of ``x``."""
    torch.set_num_threads(threads)
    limit, gflop = matmul_limit(vae, chains * block)
    variants = {
        "ours": lambda b: ours(vae, b, steps, chains, leapfrog),
        "torch": lambda b: hand_written(vae, b, steps, chains, leapfrog),
        "limit": lambda b: limit(steps, leapfrog),
    }
    for fn in variants.values():  # warm-up
        fn(x[:block])
    per_image: dict[str, list[float]] = {name: [] for name in variants}
    estimates: dict[str, list] = {"ours": [], "torch": []}
    for b in x.split(block):
        if len(b) < block:
            break  # the limit is timed at full blocks
        for name, fn in variants.items():
            t0 = time.perf_counter()
            out = fn(b)
            per_image[name].append((time.perf_counter() - t0) / len(b))
            if name in estimates:
                estimates[name].append(out)
    seconds = {name: statistics.median(t) for name, t in per_image.items()}
    diff = torch.cat(estimates["ours"]) - torch.cat(estimates["torch"])
    passes = steps + (steps - 1) * leapfrog
    return {
        "threads": threads,
        "steps": steps,
        "chains": chains,
        "leapfrog_steps": leapfrog,
        "block": block,
        "seconds_per_image": round(seconds["ours"], 4),
        "torch_seconds_per_image": round(seconds["torch"], 4),
        "limit_seconds_per_image": round(seconds["limit"], 4),
        "ratio_vs_torch": round(seconds["ours"] / seconds["torch"], 3),
        "fraction_of_matmul_limit": round(seconds["limit"] / seconds["ours"], 3),
        "matmul_gflops": round(gflop * passes / (seconds["limit"] * block), 1),
        # independent chains: the mean difference should be zero within its s.e.
        "diff_vs_torch": {
            "mean": round(float(diff.mean()), 4),
            "stderr": round(float(diff.std() / len(diff) ** 0.5), 4) if len(diff) > 1 else None,
        },
    }


def tables(cases: list[tuple[str, dict]]) -> str:
    """A Markdown table of :func:`ais_case` results, one row per ``(network, case)``.

    :param cases: the network's layer widths (``"784-400-20"``) and its case.
    :returns: the table, seconds per image with the fraction of the matmul limit.
    """
    lines = [
        "| network | threads | ours | torch | matmul limit | ours / torch, time | "
        "fraction of limit |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for net, c in cases:
        lines.append(
            f"| {net} | {c['threads']} | {c['seconds_per_image']:.3f} | "
            f"{c['torch_seconds_per_image']:.3f} | {c['limit_seconds_per_image']:.3f} "
            f"({c['matmul_gflops']:.0f} GFLOP/s) | {c['ratio_vs_torch']:.3f} | "
            f"{c['fraction_of_matmul_limit']:.0%} |"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    import argparse
    import json

    import pyro
    from output import add_out_argument, check_out, save

    from pyro_vae import VAE, load

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--block", type=int, default=32, help="images per batch and timing")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--leapfrog", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    add_out_argument(parser)
    args = parser.parse_args(argv)
    check_out(parser, args.out)
    torch.set_flush_denormal(True)
    pyro.enable_validation(False)
    torch.manual_seed(0)
    vae = VAE(784, z_dim=20, hidden_dims=(400,)).eval()
    x = load("mnist5k", binarize="dynamic").x_test[: args.images]
    out = ais_case(vae, x, args.threads, args.steps, args.chains, args.leapfrog, args.block)
    table = tables([("784-400-20", out)])
    caption = (
        f"Annealed importance sampling, seconds per image: T = {args.steps}, "
        f"C = {args.chains}, L = {args.leapfrog}, {args.block} images per batch."
    )
    print(f"{caption}\n{table}")
    save(args.out, "annealed.py", argv, out, [(caption, table)])
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
