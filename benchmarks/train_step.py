"""Training-step speed: Pyro SVI, the project's fast engine, and plain PyTorch.

The same MLP encoder and decoder (784-400-20, Bernoulli likelihood) and the same
batch of 128 binarized ``mnist5k`` digits are trained three ways, alternating in
one process so that machine load hits all of them alike:

- ``svi``: the project's ``engine="svi"`` step (``pyro.infer.SVI`` +
  ``pyro.optim.Adam`` + ``Trace_ELBO`` on ``VAE.model`` / ``VAE.guide``);
- ``fast``: the project's default ``engine="fast"`` step
  (``Trace_ELBO().differentiable_loss`` + one ``torch.optim.Adam``);
- ``torch``: a hand-written loop with the same maths: reparameterized sample,
  single-sample ``log p(x|z) + log p(z) - log q(z|x)``, same Adam.

Denormals are flushed and the thread count is fixed and printed. Also timed: one
full ``mnist5k`` epoch of data handling (permutation, slicing, dynamic
binarization) without the steps. The last line printed is JSON.

``--model iaf`` and ``--model hvae`` time the IAF guide (2 steps) and the two-layer model
the same way, each against its own hand-written loss.

Each batch size of ``--batch-sizes`` (128 and 512 by default) is timed in turn; the
last line's top-level ``ratio`` (svi / torch) and ``fast_ratio`` (fast / torch) are those
of the first, ``by_batch_size`` holds every row.

Usage: ``python benchmarks/train_step.py [--model vae|iaf|hvae] [--threads 1] [--steps 50]
[--repeats 7] [--batch-sizes 128,512] [--device cpu]``
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import pyro
import torch
from output import add_out_argument, check_out, save

from pyro_vae import VAE, binarize_batch, load, make_engine
from pyro_vae.engine import adam_options
from pyro_vae.guides import IAF
from pyro_vae.models import HVAE

LOG_2PI = math.log(2 * math.pi)


def torch_loss(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    """Negative single-sample ELBO summed over the batch, written without Pyro."""
    loc, scale = vae.encoder(x)
    eps = torch.randn_like(loc)
    z = loc + scale * eps
    logits = vae.decoder(z)
    log_px = -torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    log_pz = -0.5 * (z.pow(2) + LOG_2PI).sum()
    log_qz = (-0.5 * (eps.pow(2) + LOG_2PI) - scale.log()).sum()
    return -(log_px + log_pz - log_qz)


def torch_loss_iaf(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    """The same for the IAF guide: the flow's steps written out (stable form
    ``z <- sigma z + (1 - sigma) m``, ``sigma = sigmoid(s + 2)``, the dimensions reversed
    between steps), with the encoder's own autoregressive networks."""
    loc, scale, context = vae.encoder(x)
    eps = torch.randn_like(loc)
    z = loc + scale * eps
    log_qz = (-0.5 * (eps.pow(2) + LOG_2PI) - scale.log()).sum()
    for i, flow in enumerate(vae.encoder.flows):
        if i:
            z = z[..., vae.encoder.reverse]
        mean, logit = flow.nn(z, context=context)
        logit = logit + 2.0  # ConditionalAffineAutoregressive's sigmoid_bias
        z = torch.sigmoid(logit) * z + torch.sigmoid(-logit) * mean
        log_qz = log_qz - torch.nn.functional.logsigmoid(logit).sum()
    logits = vae.decoder(z)
    log_px = -torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    log_pz = -0.5 * (z.pow(2) + LOG_2PI).sum()
    return -(log_px + log_pz - log_qz)


def torch_loss_hvae(m: HVAE, x: torch.Tensor) -> torch.Tensor:
    """The same for the two-layer model: ``q(z1|x) q(z2|z1)``, ``p(z2) p(z1|z2) p(x|z1)``."""

    def normal_log_prob(value, loc, scale):
        return (-0.5 * ((value - loc) / scale).pow(2) - scale.log() - 0.5 * LOG_2PI).sum()

    loc1, scale1 = m.encoder1(x)
    z1 = loc1 + scale1 * torch.randn_like(loc1)
    loc2, scale2 = m.encoder2(z1)
    z2 = loc2 + scale2 * torch.randn_like(loc2)
    log_q = normal_log_prob(z1, loc1, scale1) + normal_log_prob(z2, loc2, scale2)
    prior_loc, prior_scale = m.prior1(z2)
    log_p = -0.5 * (z2.pow(2) + LOG_2PI).sum() + normal_log_prob(z1, prior_loc, prior_scale)
    logits = m.decoder(z1)
    log_p = log_p - torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    return -(log_p - log_q)


#: the model each ``--model`` times, and its hand-written loss
MODELS = {
    "vae": (lambda: VAE(784, z_dim=20, hidden_dims=(400,)), torch_loss),
    "iaf": (lambda: VAE(784, z_dim=20, hidden_dims=(400,), guide_family=IAF(2)), torch_loss_iaf),
    "hvae": (lambda: HVAE(784), torch_loss_hvae),
}


def time_batch(args, build, loss_of, device, data, batch_size: int) -> dict:
    """The three variants on one batch of ``batch_size`` images, in alternating blocks."""
    x = data.x_train[:batch_size]

    def make_vae():
        torch.manual_seed(0)
        return build().to(device)

    svi_vae, fast_vae, torch_vae = make_vae(), make_vae(), make_vae()
    svi_engine = make_engine(svi_vae, engine="svi", lr=1e-3)
    fast_engine = make_engine(fast_vae, engine="fast", lr=1e-3)
    # the same Adam as the engines (fused where torch has the kernel)
    torch_opt = torch.optim.Adam(
        torch_vae.parameters(), lr=1e-3, **adam_options(torch_vae.parameters())
    )

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def svi_step():
        svi_engine.step((x,), 1.0)

    def fast_step():
        fast_engine.step((x,), 1.0)

    def torch_step():
        torch_opt.zero_grad(set_to_none=True)
        loss_of(torch_vae, x).backward()
        torch_opt.step()

    variants = {"svi": svi_step, "fast": fast_step, "torch": torch_step}
    for step in variants.values():  # warm-up: allocator, param store, optimizer state
        for _ in range(10):
            step()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, step in variants.items():
            sync()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            sync()
            times[name].append((time.perf_counter() - t0) * 1e3 / args.steps)

    # data handling of one full epoch, steps excluded
    grey = data.x_train
    epochs_ms = []
    for _ in range(args.repeats):
        sync()
        t0 = time.perf_counter()
        perm = torch.randperm(len(grey), device=device)
        for i in range(math.ceil(len(grey) / batch_size)):
            binarize_batch(grey[perm[i * batch_size : (i + 1) * batch_size]])
        sync()
        epochs_ms.append((time.perf_counter() - t0) * 1e3)

    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "batch_size": batch_size,
        "svi_ms": round(med["svi"], 3),
        "fast_ms": round(med["fast"], 3),
        "torch_ms": round(med["torch"], 3),
        "ratio": round(med["svi"] / med["torch"], 3),
        "fast_ratio": round(med["fast"] / med["torch"], 3),
        "range_ms": {k: [round(min(v), 3), round(max(v), 3)] for k, v in times.items()},
        "data_epoch_ms": round(statistics.median(epochs_ms), 3),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--steps", type=int, default=50, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=7, help="alternating blocks per variant")
    parser.add_argument(
        "--batch-sizes", default="128,512", help="comma-separated (default 128,512)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--model",
        choices=tuple(MODELS),
        default="vae",
        help="vae: 784-400-20; iaf: the same with an IAF guide of 2 steps; hvae: Burda et "
        "al.'s two stochastic layers 784-200-200-100-100-50 (default vae)",
    )
    add_out_argument(parser)
    args = parser.parse_args(argv)
    check_out(parser, args.out)
    build, loss_of = MODELS[args.model]
    batch_sizes = [int(v) for v in args.batch_sizes.split(",") if v.strip()]

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    pyro.enable_validation(False)
    pyro.set_rng_seed(0)
    device = torch.device(args.device)
    data = load("mnist5k", binarize="static").to(device)
    rows = [time_batch(args, build, loss_of, device, data, b) for b in batch_sizes]

    first = rows[0]
    result = {
        **{k: first[k] for k in ("svi_ms", "fast_ms", "torch_ms", "ratio", "fast_ratio")},
        "batch_size": first["batch_size"],
        "by_batch_size": rows,
        "model": args.model,
        "threads": args.threads,
        "device": str(device),
        "steps": args.steps,
        "repeats": args.repeats,
        "torch_version": torch.__version__,
        "pyro_version": pyro.__version__,
    }
    title = (
        f"Training step, model {args.model}, {args.threads} thread(s) on {device}: medians of "
        f"{args.repeats} alternating blocks of {args.steps} steps, the same Adam in all three."
    )
    table = [
        "| batch | svi, ms | fast, ms | torch, ms | svi / torch | fast / torch "
        "| data, ms per epoch |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        table.append(
            f"| {r['batch_size']} | {r['svi_ms']:.3f} | {r['fast_ms']:.3f} | {r['torch_ms']:.3f} "
            f"| {r['ratio']:.3f} | {r['fast_ratio']:.3f} | {r['data_epoch_ms']:.2f} |"
        )
    print(title)
    print("\n".join(table))
    save(args.out, "train_step.py", argv, result, [(title, "\n".join(table))])
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
