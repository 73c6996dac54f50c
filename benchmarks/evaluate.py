"""Evaluator speed and memory: importance-sampled log P(x) with K samples per image.

Three ways to compute the same per-image estimate ``log (1/K) sum_k w_k`` for
the same 784-400-20 Bernoulli VAE (weights from a fixed seed; speed does not
depend on training) on ``mnist5k`` test images:

- ``ours``: :func:`pyro_vae.evaluate.log_likelihood` on batches of 100 images,
  particles in chunks under a particle plate, streaming logsumexp;
- ``loop``: the same function called once per image, a per-data-point Python
  loop as some libraries do;
- ``torch``: a hand-written torch computation of the same weights, with the
  same batches and chunk sizes.

The images are split in two halves and the variants alternate over them
(ours, torch, loop, ours, torch, loop) with the thread count fixed and printed.
Peak resident memory of a fresh process (and its size just before the
evaluation) is measured for ``ours`` at each K in ``--memory-ks`` on
``--memory-images`` images. The last line printed is JSON.

Usage: ``python benchmarks/evaluate.py [--images 1000] [--num-samples 5000] [--threads 2]``
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

import pyro
import torch
from torch.nn import functional as F

from pyro_vae import VAE, load
from pyro_vae.evaluate import log_likelihood
from pyro_vae.weights import DEFAULT_PAIRS_PER_CHUNK

LOG_2PI = math.log(2 * math.pi)
BATCH = 100


def setup(threads: int, images: int):
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    pyro.enable_validation(False)
    torch.manual_seed(0)
    vae = VAE(784, z_dim=20, hidden_dims=(400,)).eval()
    x = load("mnist5k", binarize="dynamic").x_test[:images]
    return vae, x


def ours(vae, x, k):
    return torch.cat(
        [log_likelihood(vae.model, vae.guide, b, num_samples=k).log_px for b in x.split(BATCH)]
    )


def loop(vae, x, k):
    return torch.cat(
        [
            log_likelihood(vae.model, vae.guide, x[i : i + 1], num_samples=k).log_px
            for i in range(len(x))
        ]
    )


@torch.no_grad()
def hand_written(vae, x, k):
    out = []
    for b in x.split(BATCH):
        chunk = max(1, DEFAULT_PAIRS_PER_CHUNK // len(b))
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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-images", type=int, default=100)
    parser.add_argument("--memory-ks", default="500,5000,50000")
    parser.add_argument("--probe-k", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe_k:
        return memory_probe(args)

    vae, x = setup(args.threads, args.images)
    k = args.num_samples
    halves = [x[: len(x) // 2], x[len(x) // 2 :]]
    variants = {"ours": ours, "torch": hand_written, "loop": loop}
    seconds = dict.fromkeys(variants, 0.0)
    estimates: dict[str, list] = {name: [] for name in variants}
    for half in halves:
        for name, fn in variants.items():
            t0 = time.perf_counter()
            estimates[name].append(fn(vae, half, k))
            seconds[name] += time.perf_counter() - t0
    per_s = {name: len(x) / s for name, s in seconds.items()}
    # independent samples: the signed mean difference should be zero within its s.e.
    agree = {}
    for name in ("ours", "loop"):
        diff = torch.cat(estimates[name]) - torch.cat(estimates["torch"])
        agree[name] = {
            "mean": round(float(diff.mean()), 4),
            "stderr": round(float(diff.std() / len(diff) ** 0.5), 4),
        }

    memory = {}
    for probe_k in [int(v) for v in args.memory_ks.split(",")]:
        cmd = [
            sys.executable,
            __file__,
            "--probe-k",
            str(probe_k),
            "--threads",
            str(args.threads),
            "--memory-images",
            str(args.memory_images),
        ]
        child = json.loads(
            subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
        )
        memory[str(probe_k)] = {"peak_mb": child["peak_mb"], "baseline_mb": child["baseline_mb"]}

    result = {
        "images_per_s": round(per_s["ours"], 2),
        "loop_images_per_s": round(per_s["loop"], 2),
        "torch_images_per_s": round(per_s["torch"], 2),
        "ratio_vs_torch": round(per_s["torch"] / per_s["ours"], 3),
        "ratio_vs_loop": round(per_s["loop"] / per_s["ours"], 3),
        "peak_memory_mb_by_k": memory,
        "memory_images": args.memory_images,
        "images": len(x),
        "num_samples": k,
        "threads": args.threads,
        "diff_vs_torch": agree,
        "torch_version": torch.__version__,
        "pyro_version": pyro.__version__,
    }
    print(
        f"threads={args.threads} images={len(x)} K={k} batch={BATCH} "
        f"chunk={DEFAULT_PAIRS_PER_CHUNK // BATCH}"
    )
    for name in variants:
        print(f"{name:>6}: {per_s[name]:.2f} images/s ({seconds[name]:.1f} s)")
    print(f"peak resident memory on {args.memory_images} images (and before evaluating), MB:")
    for probe_k, m in memory.items():
        print(f"  K={probe_k:>6}: {m['peak_mb']:.1f} ({m['baseline_mb']:.1f})")
    print(f"log P(x) minus torch's (independent samples), mean and s.e.: {agree}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
