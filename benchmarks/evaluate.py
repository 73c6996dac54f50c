"""Evaluator speed and memory: importance-sampled log P(x) with K samples per image.

For each network size (``--sizes``: ``small`` is the 784-400-20 Bernoulli VAE,
``burda`` Burda et al.'s 784-200-200-50) and each thread count (``--threads``: 1 and
every core by default), with weights from a fixed seed (speed does not depend on
training) on ``mnist5k`` test images, four timings alternate over blocks of the
images (ours, per-point, torch, limit, then the same on the next block of 100 images),
so that machine load hits them alike; each variant's time per image is the median over
the blocks:

- ``ours``: :func:`pyro_vae.evaluate.log_likelihood` on batches of 100 images,
  particles in chunks of 2^11 particle-image pairs under a particle plate, streaming
  logsumexp;
- ``per-point``: :func:`pyro_vae.evaluate.evaluate_dataset`, the path of
  ``pyro-vae evaluate``: one image at a time from its own random stream, with the IWAE
  bounds for k = 1, 5, 50, 500;
- ``torch``: a hand-written torch computation of the same weights, with the same
  batches and chunks (the likelihood as ``binary_cross_entropy_with_logits``);
- ``limit``: the decoder's matrix products alone (``torch.mm`` at the shapes of a chunk
  of ``ours``) for K samples per image: the time the evaluator would take if it did
  nothing but its largest unavoidable work at the measured matmul rate. The *fraction of
  the matmul limit* is this time over ``ours``'s.

With ``--ais-steps T`` (100 by default; 0 skips it), annealed importance sampling is
timed the same way for the sizes of ``--ais-sizes`` at every thread count, beside a
hand-written torch AIS with the same maths and its own matmul limit
(``benchmarks/annealed.py``); its top-level ``ais_ratio_vs_torch`` and
``ais_fraction_of_matmul_limit`` are those of the first AIS case.

Peak resident memory of a fresh process (and its size just before the evaluation) is
measured for ``ours`` at each K in ``--memory-ks`` on ``--memory-images`` images, on
the first size and thread count. The last line printed is JSON; its top-level
``images_per_s``, ``ratio_vs_torch`` (time of ours / time of torch: below 1 is faster)
and ``fraction_of_matmul_limit`` are those of the first case.

Usage: ``python benchmarks/evaluate.py [--images 400] [--num-samples 5000]
[--sizes small,burda] [--threads 1,all] [--ais-steps 100] [--ais-images 128]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings

import annealed
import pyro
import torch
from output import add_out_argument, check_out, save
from torch.nn import functional as F

from pyro_vae import VAE, load
from pyro_vae.errors import UnreliableWeights
from pyro_vae.evaluate import evaluate_dataset, log_likelihood
from pyro_vae.weights import DEFAULT_PAIRS_PER_CHUNK

LOG_2PI = math.log(2 * math.pi)
BATCH = 100
#: ``--sizes``: latent dimension and hidden widths
SIZES = {"small": (20, (400,)), "burda": (50, (200, 200))}


def network(size: str) -> str:
    """``784-400-20``: the layer widths of a ``--sizes`` entry."""
    z_dim, hidden = SIZES[size]
    return "784-" + "-".join(map(str, hidden)) + f"-{z_dim}"


def setup(threads: int, images: int, size: str = "small"):
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    pyro.enable_validation(False)
    # untrained weights: the evaluator's warning about their heavy tails is expected
    warnings.simplefilter("ignore", UnreliableWeights)
    torch.manual_seed(0)
    z_dim, hidden = SIZES[size]
    vae = VAE(784, z_dim=z_dim, hidden_dims=hidden).eval()
    x = load("mnist5k", binarize="dynamic").x_test[:images]
    return vae, x


def ours(vae, x, k):
    return torch.cat(
        [log_likelihood(vae.model, vae.guide, b, num_samples=k).log_px for b in x.split(BATCH)]
    )


def per_point(vae, x, k):
    ks = tuple(g for g in (1, 5, 50, 500) if g <= k)  # pyro-vae evaluate's default bounds
    return evaluate_dataset(vae.model, vae.guide, x, num_samples=k, ks=ks, seed=0).log_px


@torch.no_grad()
def hand_written(vae, x, k, chunk: int | None = None):
    """log P(x) per image, the weights written out in torch: the encoder once per batch
    of 100 images, particles in chunks of ``chunk`` (by default ``ours``'s)."""
    out = []
    for b in x.split(BATCH):
        chunk = chunk or max(1, DEFAULT_PAIRS_PER_CHUNK // len(b))
        loc, scale = vae.encoder(b)  # (B, z)
        lse = None
        for start in range(0, k, chunk):
            c = min(chunk, k - start)
            eps = torch.randn(c, *loc.shape)
            z = loc + scale * eps  # (c, B, z)
            logits = vae.decoder(z)  # (c, B, 784)
            log_px_z = -F.binary_cross_entropy_with_logits(
                logits, b.expand_as(logits), reduction="none"
            ).sum(-1)
            log_pz = -0.5 * (z.pow(2) + LOG_2PI).sum(-1)
            log_qz = (-0.5 * (eps.pow(2) + LOG_2PI) - scale.log()).sum(-1)
            part = torch.logsumexp(log_px_z + log_pz - log_qz, 0)
            lse = part if lse is None else torch.logaddexp(lse, part)
        out.append(lse - math.log(k))
    return torch.cat(out)


def matmul_limit(vae):
    """``(limit, gflop_per_sample)``: ``limit(x, k)`` runs the decoder's matrix products
    for ``k`` samples of each image of ``x`` in chunks of ``ours``'s shape."""
    rows = max(1, DEFAULT_PAIRS_PER_CHUNK // BATCH) * BATCH
    layers = [m for m in vae.decoder.modules() if isinstance(m, torch.nn.Linear)]
    mats = [(torch.randn(rows, m.in_features), m.weight.detach()) for m in layers]
    flops = sum(2 * w.shape[0] * w.shape[1] for _, w in mats)

    def limit(x, k):
        full, rest = divmod(len(x) * k, rows)  # every sample's row, once
        for size in [rows] * full + ([rest] if rest else []):
            for a, w in mats:
                torch.mm(a[:size], w.t())

    return limit, flops / 1e9


def speed_case(size: str, threads: int, args) -> dict:
    """One size at one thread count: images per second of every variant, alternating."""
    vae, x = setup(threads, args.images, size)
    k = args.num_samples
    limit, gflop = matmul_limit(vae)
    variants = {
        "ours": ours,
        "per_point": per_point,
        "torch": hand_written,
        "limit": lambda vae, x, k: limit(x, k),
    }
    for fn in variants.values():  # warm-up
        fn(vae, x[:2], 64)
    blocks = x.split(BATCH)  # alternate over blocks of 100 images: medians per variant
    per_image: dict[str, list[float]] = {name: [] for name in variants}
    estimates: dict[str, list] = {name: [] for name in variants}
    for block in blocks:
        for name, fn in variants.items():
            t0 = time.perf_counter()
            estimates[name].append(fn(vae, block, k))
            per_image[name].append((time.perf_counter() - t0) / len(block))
    seconds = {name: statistics.median(t) for name, t in per_image.items()}  # per image
    per_s = {name: 1 / s for name, s in seconds.items()}
    # independent samples: the signed mean difference should be zero within its s.e.
    diff = torch.cat(estimates["ours"]) - torch.cat(estimates["torch"])
    return {
        "size": size,
        "threads": threads,
        "images_per_s": round(per_s["ours"], 2),
        "per_point_images_per_s": round(per_s["per_point"], 2),
        "torch_images_per_s": round(per_s["torch"], 2),
        "limit_images_per_s": round(per_s["limit"], 2),
        "ratio_vs_torch": round(seconds["ours"] / seconds["torch"], 3),
        "fraction_of_matmul_limit": round(seconds["limit"] / seconds["ours"], 3),
        "per_point_fraction_of_matmul_limit": round(seconds["limit"] / seconds["per_point"], 3),
        "matmul_gflops": round(gflop * k * per_s["limit"], 1),
        "diff_vs_torch": {
            "mean": round(float(diff.mean()), 4),
            "stderr": round(float(diff.std() / len(diff) ** 0.5), 4),
        },
    }


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def memory_probe(args) -> None:
    """Child process: peak resident memory of one evaluation, printed as JSON.

    Loading the data set leaves a high peak of its own, so the kernel's peak-RSS
    counter is reset (``/proc/self/clear_refs``, Linux) after set-up; elsewhere the
    process-lifetime ``ru_maxrss`` is used, which can hide the evaluation's peak.
    """
    vae, x = setup(args.threads, args.memory_images)
    ours(vae, x[:1], 1)  # warm-up: lazy imports, first allocations
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        before, peak_field = _status_mb("VmRSS"), "VmHWM"
    except OSError:
        before, peak_field = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, None
    ours(vae, x, args.probe_k)
    if peak_field:
        peak = _status_mb(peak_field)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"k": args.probe_k, "baseline_mb": round(before, 1), "peak_mb": round(peak, 1)}
    print(json.dumps(result))


def _threads(text: str) -> list[int]:
    cores = os.cpu_count() or 1
    values = [cores if v.strip() == "all" else int(v) for v in text.split(",") if v.strip()]
    return list(dict.fromkeys(values))  # "1,all" on one core is one case


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400, help="in blocks of 100 (default 400)")
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--sizes", default="small,burda", help="of: " + ", ".join(SIZES))
    parser.add_argument(
        "--threads", default="1,all", help="torch thread counts; all: every core (default 1,all)"
    )
    parser.add_argument("--memory-images", type=int, default=100)
    parser.add_argument("--memory-ks", default="500,5000,50000")
    parser.add_argument("--ais-steps", type=int, default=100, help="AIS: T; 0 skips AIS")
    parser.add_argument("--ais-chains", type=int, default=8)
    parser.add_argument("--ais-leapfrog", type=int, default=10)
    parser.add_argument("--ais-images", type=int, default=128)
    parser.add_argument("--ais-block", type=int, default=64, help="AIS: images per batch")
    parser.add_argument("--ais-sizes", default="small", help="AIS: network sizes to time")
    parser.add_argument("--probe-k", type=int, help=argparse.SUPPRESS)
    add_out_argument(parser)
    args = parser.parse_args(argv)
    check_out(parser, args.out)
    thread_counts = _threads(args.threads)
    sizes = [v.strip() for v in args.sizes.split(",") if v.strip()]
    if args.probe_k:
        args.threads = thread_counts[0]
        return memory_probe(args)

    cases = [speed_case(size, t, args) for size in sizes for t in thread_counts]
    ais_cases = []
    if args.ais_steps > 0:
        for size in [v.strip() for v in args.ais_sizes.split(",") if v.strip()]:
            vae, x = setup(thread_counts[0], args.ais_images, size)
            for t in thread_counts:
                case = annealed.ais_case(
                    vae, x, t, args.ais_steps, args.ais_chains, args.ais_leapfrog, args.ais_block
                )
                ais_cases.append({"size": size, **case})

    memory = {}
    for probe_k in [int(v) for v in args.memory_ks.split(",") if v.strip()]:
        cmd = [
            sys.executable,
            __file__,
            "--probe-k",
            str(probe_k),
            "--threads",
            str(thread_counts[0]),
            "--memory-images",
            str(args.memory_images),
        ]
        child = json.loads(
            subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
        )
        memory[str(probe_k)] = {"peak_mb": child["peak_mb"], "baseline_mb": child["baseline_mb"]}

    first = cases[0]
    result = {
        **{k: first[k] for k in ("images_per_s", "torch_images_per_s", "ratio_vs_torch")},
        "fraction_of_matmul_limit": first["fraction_of_matmul_limit"],
        "cases": cases,
        "ais_ratio_vs_torch": ais_cases[0]["ratio_vs_torch"] if ais_cases else None,
        "ais_fraction_of_matmul_limit": (
            ais_cases[0]["fraction_of_matmul_limit"] if ais_cases else None
        ),
        "ais_cases": ais_cases,
        "peak_memory_mb_by_k": memory,
        "memory_images": args.memory_images,
        "images": args.images,
        "num_samples": args.num_samples,
        "chunk_pairs": DEFAULT_PAIRS_PER_CHUNK,
        "torch_version": torch.__version__,
        "pyro_version": pyro.__version__,
    }
    speed = [
        "| network | threads | ours, images/s | per-point | torch | matmul limit | "
        "ours / torch, time | fraction of limit: ours | per-point |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cases:
        speed.append(
            f"| {network(c['size'])} | {c['threads']} | {c['images_per_s']:.2f} | "
            f"{c['per_point_images_per_s']:.2f} | {c['torch_images_per_s']:.2f} | "
            f"{c['limit_images_per_s']:.2f} ({c['matmul_gflops']:.0f} GFLOP/s) | "
            f"{c['ratio_vs_torch']:.3f} | {c['fraction_of_matmul_limit']:.0%} | "
            f"{c['per_point_fraction_of_matmul_limit']:.0%} |"
        )
    tables = [
        (
            f"Importance-sampled log P(x), {args.images} test images in blocks of {BATCH}, "
            f"K = {args.num_samples}, chunks of {DEFAULT_PAIRS_PER_CHUNK} particle-image "
            "pairs; medians over the blocks.",
            "\n".join(speed),
        )
    ]
    if ais_cases:
        first_ais = ais_cases[0]
        tables.append(
            (
                f"Annealed importance sampling, seconds per image: T = {first_ais['steps']}, "
                f"C = {first_ais['chains']} chains, L = {first_ais['leapfrog_steps']} leapfrog "
                f"steps, {first_ais['block']} images per batch.",
                annealed.tables([(network(c["size"]), c) for c in ais_cases]),
            )
        )
    memory_table = ["| K | peak, MB | before evaluating, MB |", "|---:|---:|---:|"]
    for probe_k, m in memory.items():
        memory_table.append(f"| {int(probe_k):,} | {m['peak_mb']:.1f} | {m['baseline_mb']:.1f} |")
    tables.append(
        (
            f"Peak resident memory of a fresh process evaluating {args.memory_images} images.",
            "\n".join(memory_table),
        )
    )
    diff = ["| network | threads | mean, nats | standard error |", "|---|---:|---:|---:|"]
    for c in cases:
        d = c["diff_vs_torch"]
        diff.append(
            f"| {network(c['size'])} | {c['threads']} | {d['mean']:.2f} | {d['stderr']:.2f} |"
        )
    tables.append(
        ("log P(x) of ours minus torch's, per image (independent samples).", "\n".join(diff))
    )
    for caption, text in tables:
        print(f"\n{caption}\n{text}")
    save(args.out, "evaluate.py", argv, result, tables)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
