"""What each speed-up bought: the old and new code paths, side by side in one process.

The 784-400-20 Bernoulli VAE on ``mnist5k``, one thread by default. Each configuration
switches on one more of the changes, cumulatively, from the code as it was to the code
as it is; they alternate in blocks, and each row is the median of ``--repeats`` blocks:

1. *as before*: Pyro's ``Bernoulli(logits).to_event(1)``, the guide's
   ``Normal(loc, scale).to_event(1)``, ``pyro.module`` registration on every step,
   ``torch.optim.Adam`` with torch's default implementation;
2. *+ fused Adam*: ``torch.optim.Adam(fused=True)``
   (:func:`pyro_vae.engine.adam_options`);
3. *+ no param-store lookups*: the fast engine runs the model outside the param store
   (:meth:`pyro_vae.models.base.Model.outside_param_store`);
4. *+ log q from the noise*: :class:`pyro_vae.guides.ReparameterizedNormal`;
5. *+ fused Bernoulli*: :class:`pyro_vae.likelihoods.pixels.BernoulliPixels`: the
   code as it is.

The hand-written torch step of ``benchmarks/train_step.py`` is timed beside them with
either Adam. The evaluator rows time :func:`pyro_vae.evaluate.log_likelihood` on 100
test images (batched, ``--eval-samples`` particles each) and
:func:`pyro_vae.evaluate.evaluate_dataset` on 10 (one at a time, K = 5,000), for
configurations 1, 4 and 5 (2 and 3 change nothing there). The last line printed is JSON.

Usage: ``python benchmarks/speedups.py [--threads 1] [--repeats 7] [--steps 50]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import pyro
import pyro.distributions as dist
import torch
from output import add_out_argument, check_out, save
from train_step import torch_loss

from pyro_vae import VAE, load, make_engine
from pyro_vae import engine as engine_module
from pyro_vae.evaluate import evaluate_dataset, log_likelihood
from pyro_vae.guides import DiagonalGaussian
from pyro_vae.likelihoods import pixels
from pyro_vae.models.base import Model

NEW_BERNOULLI = pixels.Bernoulli.forward
NEW_GUIDE = DiagonalGaussian.distribution
NEW_OUTSIDE = Model.outside_param_store
CONFIGS = ("as before", "+ fused Adam", "+ no param-store lookups", "+ log q from the noise")
CONFIGS = (*CONFIGS, "+ fused Bernoulli")


def _old_bernoulli(self, out):
    return dist.Bernoulli(logits=out).to_event(1)


def _old_guide(self, encoder, params):
    loc, scale = params
    return dist.Normal(loc, scale).to_event(1)


@contextlib.contextmanager
def _registering(self):
    yield self


def switch(level: int) -> None:
    """Put the distributions of configuration ``level`` (0 = as before) in place."""
    pixels.Bernoulli.forward = NEW_BERNOULLI if level >= 4 else _old_bernoulli
    DiagonalGaussian.distribution = NEW_GUIDE if level >= 3 else _old_guide


def mean_ms(fn, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) * 1e3 / calls


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=50, help="training steps per block")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--eval-samples", type=int, default=1000)
    add_out_argument(parser)
    args = parser.parse_args(argv)
    check_out(parser, args.out)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    pyro.enable_validation(False)
    data = load("mnist5k", binarize="static")
    x = data.x_train[: args.batch_size]
    x_test = data.x_test[:100]

    def fresh():
        torch.manual_seed(0)
        return VAE(784, z_dim=20, hidden_dims=(400,))

    steps, vaes = {}, {}
    for level, name in enumerate(CONFIGS):
        # the optimizer and the registration are fixed when the engine is built
        options = engine_module.adam_options
        if level == 0:
            engine_module.adam_options = lambda params: {}
        if level < 2:
            Model.outside_param_store = _registering
        vaes[name] = fresh()
        engine = make_engine(vaes[name], engine="fast", lr=1e-3)
        engine_module.adam_options, Model.outside_param_store = options, NEW_OUTSIDE
        steps[name] = (level, engine)
    hands = {}
    for label, fused in (("torch, default Adam", False), ("torch, fused Adam", True)):
        hand = fresh()
        opt = torch.optim.Adam(hand.parameters(), lr=1e-3, fused=fused)

        def hand_step(hand=hand, opt=opt):
            opt.zero_grad(set_to_none=True)
            torch_loss(hand, x).backward()
            opt.step()

        hands[label] = hand_step

    def block(level: int, fn, calls: int) -> float:
        switch(level)
        return mean_ms(fn, calls)

    train = {name: [] for name in (*CONFIGS, *hands)}
    for _ in range(2):  # warm-up
        for level, engine in steps.values():
            block(level, lambda engine=engine: engine.step((x,), 1.0), 5)
        for fn in hands.values():
            block(4, fn, 5)
    for _ in range(args.repeats):
        for name, (level, engine) in steps.items():
            fn = lambda engine=engine: engine.step((x,), 1.0)  # noqa: E731
            train[name].append(block(level, fn, args.steps))
        for name, fn in hands.items():
            train[name].append(block(4, fn, args.steps))
    train_ms = {name: statistics.median(t) for name, t in train.items()}

    evaluation = {}
    vae = fresh().eval()
    for level in (0, 3, 4):
        name = CONFIGS[level]
        evaluation[name] = {"batched": [], "per_point": []}
    for _ in range(max(3, args.repeats // 2)):
        for level in (0, 3, 4):
            name = CONFIGS[level]
            switch(level)
            t0 = time.perf_counter()
            log_likelihood(vae.model, vae.guide, x_test, num_samples=args.eval_samples)
            batched = (time.perf_counter() - t0) / len(x_test) * 5000 / args.eval_samples
            t0 = time.perf_counter()
            evaluate_dataset(vae.model, vae.guide, x_test[:10], num_samples=5000, seed=0)
            per_point = (time.perf_counter() - t0) / 10
            evaluation[name]["batched"].append(batched * 1e3)
            evaluation[name]["per_point"].append(per_point * 1e3)
    switch(4)
    # rounded once, here: the table shows the numbers the JSON keeps
    eval_ms = {
        name: {k: round(statistics.median(v), 3) for k, v in parts.items()}
        for name, parts in evaluation.items()
    }

    train_table = [
        "| configuration | training step, ms | / torch with the same Adam |",
        "|---|---:|---:|",
    ]
    for level, name in enumerate(CONFIGS):
        torch_ms = train_ms["torch, default Adam" if level == 0 else "torch, fused Adam"]
        train_table.append(f"| {name} | {train_ms[name]:.3f} | {train_ms[name] / torch_ms:.3f} |")
    for name in hands:
        train_table.append(f"| {name} | {train_ms[name]:.3f} | 1 |")
    eval_table = [
        "| configuration | evaluator, ms per image at K = 5,000: batched | one at a time |",
        "|---|---:|---:|",
    ]
    for name, parts in eval_ms.items():
        eval_table.append(f"| {name} | {parts['batched']:.2f} | {parts['per_point']:.2f} |")
    tables = [
        (
            f"Training step, 784-400-20 VAE, batch {args.batch_size}, {args.threads} thread(s): "
            f"medians of {args.repeats} alternating blocks of {args.steps} steps.",
            "\n".join(train_table),
        ),
        (
            f"The evaluator, ms per image at K = 5,000 (batched: 100 images, "
            f"{args.eval_samples} particles each, scaled to 5,000; one at a time: 10 images).",
            "\n".join(eval_table),
        ),
    ]
    for caption, table in tables:
        print(f"\n{caption}\n{table}")
    result = {
        "threads": args.threads,
        "batch_size": args.batch_size,
        "train_ms": {k: round(v, 3) for k, v in train_ms.items()},
        "eval_ms_per_image": eval_ms,
        "torch_version": torch.__version__,
    }
    save(args.out, "speedups.py", argv, result, tables)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
