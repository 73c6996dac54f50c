"""``pyro-vae evaluate``: log P(X), IWAE bounds and the ELBO gap of a trained run.

Writes ``eval.json`` (summary and per-point values), ``eval.md`` (the table it prints)
and ``bounds.png`` into the run folder (``eval_train.*`` and ``bounds_train.png`` for
``--split train``; ``_nN`` for a subset of N points).

The quantities follow the model's notation: for a conditional model, log P(Y|X) with z
from Q(z|X,Y) and from the prior P(z|X). The estimate with z from the prior (the naive
estimator of the tutorial's section 2.3) is a second pass over the data with its own K,
``--naive-samples`` (default ``min(500, --num-samples)``; 0 skips it). A model without
latent variables has an exact log-likelihood, and nothing is sampled.

``--method ais`` or ``both`` estimates log P(X) by annealed importance sampling
(:mod:`pyro_vae.ais`), alone or beside importance sampling with the paired difference;
``--bdmc N`` sandwiches log P(X) between AIS bounds on N points simulated from the
model. Every importance-sampling pass reports the Pareto k-hat of each point's weights
and warns when many points have unreliable weights.

The options, their bounds and the checks that refuse a combination before any work are
in :mod:`pyro_vae.cli.evaluate_options`.
"""

from __future__ import annotations

import argparse
import sys
import time

from pyro_vae import ais, distributed, reports
from pyro_vae import run as run_mod
from pyro_vae.cli.evaluate_options import (
    DEFAULT_KS,
    add_options,
    ais_settings,
    check_ais,
    check_options,
    check_sizes,
    naive_samples,
)
from pyro_vae.cli.options import add_force, check_new, writing, wrote
from pyro_vae.errors import UsageError
from pyro_vae.evaluate import evaluate_dataset, mean_elbo
from pyro_vae.gaps import decompose_gap
from pyro_vae.io import write_json, write_text
from pyro_vae.splits import spread_subset


def add_parser(sub) -> None:
    """Register ``evaluate`` on an ``argparse`` subparsers object."""
    e = sub.add_parser("evaluate", help="importance-sampled log P(X), IWAE bounds and ELBO gap")
    add_options(e)
    add_force(e, "evaluation")
    e.set_defaults(func=cmd_evaluate, distributed=True)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``pyro-vae evaluate``: see ``pyro-vae evaluate --help``."""
    check_options(args)
    ks = args.ks or tuple(k for k in DEFAULT_KS if k <= args.num_samples)
    device = distributed.setup(args.device)
    with distributed.node_leader_first():  # one download per node, then the others read
        model, dataset, _, folder = run_mod.open_run(args.run, device)
    if args.gap_decomposition and not model.supports("gap_decomposition"):
        raise UsageError(
            f'--gap-decomposition refines the guide of one latent site "z" per point; the '
            f"{model.describe()} in {args.run} has none. Drop --gap-decomposition"
        )
    data = model.evaluation_data(dataset, args.split)
    check_sizes(data, args)
    check_ais(model, data, args)
    if args.bdmc:  # the points that lend the simulated ones their inputs and shapes
        simulated_from = tuple(t[spread_subset(len(t), args.bdmc).to(t.device)] for t in data)
    subset = spread_subset(len(data[0]), args.limit).to(data[0].device)
    data = tuple(t[subset] for t in data)
    settings = {"run": str(args.run), "split": args.split, "seed": args.seed}
    if args.method != "is" or args.bdmc:
        settings["method"] = args.method
    paths = folder.evaluation(args.split, args.limit)

    def check() -> None:
        check_new(paths, args.force, other="" if args.limit else " (--limit N writes eval_nN.*)")

    with writing(folder.folder, "pyro-vae evaluate", check=check):
        return _evaluate(
            args, model, dataset, data, ks, settings, paths, simulated_from if args.bdmc else None
        )


def _evaluate(args, model, dataset, data, ks, settings, paths, simulated_from) -> int:
    """Estimate, report and write ``paths`` (``eval.json``, ``eval.md``, ``bounds.png``),
    holding the run folder's lock."""
    json_path, md_path, png_path = paths
    main = distributed.is_main()  # every rank computes its share, rank 0 writes
    if not model.supports("latent"):  # exact: nothing to sample
        report = reports.exact_report(model, dataset, settings, model.exact_log_likelihood(*data))
        if not main:
            return 0
        table = reports.evaluation_table(report)
        write_json(json_path, report)
        write_text(md_path, table)
        print(table, end="")
        wrote(json_path, md_path)
        return 0

    # every data point draws from its own stream of --seed: the same numbers with any
    # number of processes
    common = dict(num_samples=args.num_samples, seed=args.seed, progress=not args.no_progress)
    guided = naive = None
    k_naive = naive_samples(args) if args.method != "ais" else 0
    if args.method != "ais":
        guided = evaluate_dataset(
            model.model, model.proposal, data, ks=tuple(sorted({1, *ks})), **common
        )
    annealed = bdmc = None
    seconds = {}
    try:  # what the checks above cannot foresee is still one line, not a traceback
        if args.method != "is":
            start = time.perf_counter()
            annealed = ais.ais_dataset(
                model.model,
                model.proposal,
                data,
                seed=args.seed,
                progress=not args.no_progress,
                **ais_settings(args),
            )
            seconds["ais"] = time.perf_counter() - start
        if args.bdmc:
            start = time.perf_counter()
            bdmc = ais.bdmc_dataset(
                model.model,
                model.proposal,
                simulated_from,
                site=model.target,
                seed=args.seed,
                progress=not args.no_progress,
                **ais_settings(args),
            )
            seconds["bdmc"] = time.perf_counter() - start
    except ValueError as err:
        raise UsageError(f"AIS on the {model.describe()}: {err}") from None
    if k_naive:  # the same on every rank, so every rank makes the same calls
        naive = evaluate_dataset(
            model.model, None, data, ks=(1,), proposal="prior", **{**common, "num_samples": k_naive}
        )
    gaps = None
    if args.gap_decomposition:
        x = data[0][spread_subset(len(data[0]), args.gap_points).to(data[0].device)]
        gaps = decompose_gap(
            model, x, steps=args.gap_steps, num_samples=args.num_samples, seed=args.seed
        )
    negative_elbo = -mean_elbo(
        model.model,
        model.guide,
        data,
        num_particles=reports.TUTORIAL_ELBO_PARTICLES,
        batch_size=args.batch_size,
        max_plate_nesting=model.max_plate_nesting,
        seed=args.seed,  # one stream per batch: the same with any number of processes
        enumerate=bool(model.enumerated_sites),
    )
    exact = None
    if main and model.supports("exact_log_likelihood"):  # a latent model with a summable log P
        try:
            exact = model.exact_log_likelihood(*data)
        except UsageError:  # this instance's sum is too large
            exact = None
    if not main:
        return 0
    report = reports.evaluation_report(
        model,
        dataset,
        settings,
        guided,
        naive,
        gaps,
        negative_elbo,
        exact,
        ais=annealed,
        bdmc=bdmc,
        seconds=seconds,
    )
    table = reports.evaluation_table(report)
    write_json(json_path, report)
    write_text(md_path, table)
    written = [json_path, md_path]
    if guided is not None:
        from pyro_vae import plots

        plots.save_figure(plots.bounds_figure(report), png_path)
        written.append(png_path)
    else:  # an earlier evaluation's bounds would sit beside this report as if its own
        png_path.unlink(missing_ok=True)
    print(table, end="")
    for line in report["order_violations"]:
        print(f"pyro-vae: error: {line}", file=sys.stderr)
    if report["order_violations"]:
        return 1
    wrote(*written)
    return 0
