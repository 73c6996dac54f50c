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
"""

from __future__ import annotations

import argparse
import sys
import time

from pyro_vae import ais, distributed, reports
from pyro_vae import run as run_mod
from pyro_vae.cli.options import add_device, add_force, add_run, add_seed, check_new, writing, wrote
from pyro_vae.errors import UsageError
from pyro_vae.evaluate import evaluate_dataset, mean_elbo
from pyro_vae.gaps import decompose_gap
from pyro_vae.io import write_json, write_text
from pyro_vae.parsing import at_least, open_unit, positive_set
from pyro_vae.splits import SPLITS, spread_subset

DEFAULT_KS = (1, 5, 50, 500)
#: K of the naive pass (z from the prior) unless ``--naive-samples`` says otherwise; the
#: default is never more than ``--num-samples``
DEFAULT_NAIVE_SAMPLES = 500
#: how log P(X) is estimated: importance sampling, annealed importance sampling, both
METHODS = ("is", "ais", "both")


def add_parser(sub) -> None:
    """Register ``evaluate`` on an ``argparse`` subparsers object."""
    e = sub.add_parser("evaluate", help="importance-sampled log P(X), IWAE bounds and ELBO gap")
    add_run(e)
    e.add_argument(
        "--num-samples", type=at_least(1), default=5000, help="K per data point (default 5000)"
    )
    e.add_argument(
        "--naive-samples",
        type=at_least(0),
        metavar="N",
        help="K of the naive estimate of log P(X) with z from the prior instead of Q, "
        "shown beside it because the prior needs far more samples (the tutorial's section "
        "2.3); a second pass over the data that takes about N/K as long as the first "
        f"(N = K doubles the run time); 0 skips it (default: {DEFAULT_NAIVE_SAMPLES} or "
        "--num-samples, whichever is smaller)",
    )
    e.add_argument(
        "--ks", type=positive_set, help="IWAE group sizes (default: those of 1,5,50,500 up to K)"
    )
    e.add_argument(
        "--method",
        choices=METHODS,
        default="is",
        help="is: importance sampling with the guide (K = --num-samples); ais: annealed "
        "importance sampling with HMC (--ais-*); both: side by side, with their paired "
        "difference (default is)",
    )
    e.add_argument(
        "--ais-steps",
        type=at_least(1),
        metavar="T",
        help=f"AIS: intermediate distributions (default {ais.DEFAULTS['num_steps']})",
    )
    e.add_argument(
        "--ais-chains",
        type=at_least(1),
        metavar="C",
        help=f"AIS: chains per point (default {ais.DEFAULTS['num_chains']})",
    )
    e.add_argument(
        "--leapfrog-steps",
        type=at_least(1),
        metavar="L",
        help=f"AIS: leapfrog steps per HMC transition (default {ais.DEFAULTS['leapfrog_steps']})",
    )
    e.add_argument(
        "--ais-init",
        choices=ais.INITS,
        help="AIS: the initial distribution, the guide Q(z|X) or the prior (default guide)",
    )
    e.add_argument(
        "--ais-schedule",
        choices=ais.SCHEDULES,
        help="AIS: spacing of the inverse temperatures (default sigmoid, as Wu et al.)",
    )
    e.add_argument(
        "--ais-step-size",
        type=open_unit,
        help=f"AIS: the first HMC step size, in (0, 1), adapted per point towards an "
        f"acceptance rate of {ais.TARGET_ACCEPT} (default {ais.STEP_SIZE})",
    )
    e.add_argument(
        "--bdmc",
        type=at_least(0),
        default=0,
        metavar="N",
        help="bidirectional Monte Carlo on N points simulated from the model: AIS forward "
        "(a lower bound of log P) and in reverse from the latents that made each point "
        "(an upper bound), with the --ais-* settings; their gap says how close AIS gets "
        "(default 0: none)",
    )
    e.add_argument("--split", choices=SPLITS, default="test", help="(default test)")
    add_force(e, "evaluation")
    e.add_argument("--limit", type=at_least(1), help="evaluate N evenly spaced points")
    e.add_argument(
        "--batch-size",
        type=at_least(1),
        default=100,
        help="data points per pass of the 10-particle ELBO (default 100)",
    )
    add_seed(e)
    e.add_argument(
        "--gap-decomposition",
        action="store_true",
        help="fit q*(z) per point and split the gap into approximation and amortization",
    )
    e.add_argument(
        "--gap-points",
        type=at_least(1),
        default=100,
        help="points for the gap decomposition (default 100)",
    )
    e.add_argument(
        "--gap-steps", type=at_least(0), default=500, help="SVI steps per q* (default 500)"
    )
    add_device(e)
    e.add_argument("--no-progress", action="store_true", help="hide progress bars")
    e.set_defaults(func=cmd_evaluate, distributed=True)


#: the AIS options and the :func:`~pyro_vae.ais.ais_dataset` setting each one gives; an
#: option left out takes the setting's default (:data:`pyro_vae.ais.DEFAULTS`)
AIS_OPTIONS = {
    "ais_steps": "num_steps",
    "ais_chains": "num_chains",
    "leapfrog_steps": "leapfrog_steps",
    "ais_init": "init",
    "ais_schedule": "schedule_kind",
    "ais_step_size": "step_size",
}


def ais_settings(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`~pyro_vae.ais.ais_dataset` that the options give.

    :param args: the parsed ``evaluate`` options.
    """
    given = {setting: getattr(args, option) for option, setting in AIS_OPTIONS.items()}
    return {setting: ais.DEFAULTS[setting] if v is None else v for setting, v in given.items()}


def _check_ais(model, data, args: argparse.Namespace) -> None:
    """Refuse AIS and BDMC where they cannot run, before any work (exit 2)."""
    wanted = [f"--method {args.method}"] if args.method != "is" else []
    wanted += ["--bdmc"] if args.bdmc else []
    if not wanted:
        unused = [o for o in AIS_OPTIONS if getattr(args, o) is not None]
        if unused:
            flag = "--" + unused[0].replace("_", "-")
            raise UsageError(
                f"{flag} sets annealed importance sampling, which runs only with --method "
                "ais or both, or --bdmc N; add one of them or drop it"
            )
        return
    what = " and ".join(wanted)
    if not model.supports("latent"):
        raise UsageError(
            f"{what}: the {model.describe()} has no latent variable, so its log-likelihood "
            "is exact; drop " + " and ".join(w.split()[0] for w in wanted)
        )
    point = tuple(t[:1] for t in data)
    try:
        ais.check(model.model, model.proposal, *point, init=ais_settings(args)["init"])
        if args.bdmc:
            ais.simulated_data(model.model, point, [0], site=model.target)
    except ValueError as err:
        exact = (
            "; its exact log-likelihood (the latents summed out) is in the table of "
            "`pyro-vae evaluate` without these options"
            if model.supports("exact_log_likelihood")
            else ""
        )
        raise UsageError(f"{what} on the {model.describe()}: {err}{exact}") from None
    if args.bdmc > len(data[0]):
        raise UsageError(
            f"--bdmc {args.bdmc} exceeds the {len(data[0])} points of the {args.split} split "
            "that lend the simulated points their shape; ask for fewer"
        )


def naive_samples(args: argparse.Namespace) -> int:
    """K of the naive pass (z from the prior): ``--naive-samples`` as given, or by default
    :data:`DEFAULT_NAIVE_SAMPLES` capped at ``--num-samples``; 0 means no naive pass.

    :param args: the parsed ``evaluate`` options (``num_samples``, ``naive_samples``).
    """
    if args.naive_samples is None:
        return min(DEFAULT_NAIVE_SAMPLES, args.num_samples)
    return args.naive_samples


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``pyro-vae evaluate``: see ``pyro-vae evaluate --help``."""
    ks = args.ks or tuple(k for k in DEFAULT_KS if k <= args.num_samples)
    if max(ks) > args.num_samples:
        raise UsageError(f"--ks {max(ks)} exceeds --num-samples {args.num_samples}")
    device = distributed.setup(args.device)
    with distributed.node_leader_first():  # one download per node, then the others read
        model, dataset, _, folder = run_mod.open_run(args.run, device)
    if args.gap_decomposition and not model.supports("gap_decomposition"):
        raise UsageError(
            f'--gap-decomposition refines the guide of one latent site "z" per point; the '
            f"{model.describe()} in {args.run} has none. Drop --gap-decomposition"
        )
    data = model.evaluation_data(dataset, args.split)
    _check_ais(model, data, args)
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
