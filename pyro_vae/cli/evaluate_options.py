"""The options of ``pyro-vae evaluate``, their bounds, and the checks that refuse a
combination that cannot run (or an option that another one it needs is missing for)
before any work: every refusal is one line and exit status 2."""

from __future__ import annotations

import argparse

from pyro_vae import ais
from pyro_vae.cli.options import add_device, add_run, add_seed
from pyro_vae.errors import UsageError
from pyro_vae.parsing import at_least, open_unit, positive_set
from pyro_vae.splits import SPLITS

#: K per point unless ``--num-samples`` says otherwise
DEFAULT_NUM_SAMPLES = 5000
#: the largest K (``--num-samples``, ``--naive-samples``): 2000 times the default. Memory
#: does not grow with K (particles come in chunks), time does: K = 10^5 took 7 s for one
#: digits point on 2 CPU cores, so 10^7 is some 12 minutes per point, months per split
MAX_NUM_SAMPLES = 10**7
DEFAULT_KS = (1, 5, 50, 500)
#: K of the naive pass (z from the prior) unless ``--naive-samples`` says otherwise; the
#: default is never more than ``--num-samples``
DEFAULT_NAIVE_SAMPLES = 500
#: how log P(X) is estimated: importance sampling, annealed importance sampling, both
METHODS = ("is", "ais", "both")
#: the largest AIS settings. Time: 2000 steps of 10 leapfrog steps took 15 minutes for
#: one batch of points on 2 CPU cores, so 10^5 steps (200 times the default) take half a
#: day per batch, and 1000 leapfrog steps (100 times) ten times the default's time.
#: Memory: a batch holds every chain of a point, each a copy of the point's tensors
#: (10^4 chains of a 784-pixel image: 31 MB per tensor, of which HMC keeps dozens)
MAX_AIS_STEPS = 10**5
MAX_LEAPFROG_STEPS = 1000
MAX_AIS_CHAINS = 10**4
#: the largest ``--batch-size`` of the ELBO pass, which holds 10 particles of every point
#: of a batch: 10^5 MNIST images are 3.1 GB of float32 per tensor (a batch larger than
#: the points evaluated is all of them)
MAX_BATCH_SIZE = 10**5
#: points of the gap decomposition unless ``--gap-points`` says otherwise (at most the
#: points evaluated), and SVI steps per point: the default and the largest (200 times it;
#: each step is a pass of 10 particles)
DEFAULT_GAP_POINTS = 100
DEFAULT_GAP_STEPS = 500
MAX_GAP_STEPS = 10**5


def add_options(e: argparse.ArgumentParser) -> None:
    """Every option of ``evaluate`` on its parser ``e``."""
    add_run(e)
    e.add_argument(
        "--num-samples",
        type=at_least(1, MAX_NUM_SAMPLES),
        metavar="K",
        help=f"K per data point, at most {MAX_NUM_SAMPLES:,} (time grows with K: that is "
        "some 12 minutes a point on 2 CPU cores); with --method ais, only for "
        f"--gap-decomposition (default {DEFAULT_NUM_SAMPLES})",
    )
    e.add_argument(
        "--naive-samples",
        type=at_least(0, MAX_NUM_SAMPLES),
        metavar="N",
        help="K of the naive estimate of log P(X) with z from the prior instead of Q, "
        "shown beside it because the prior needs far more samples (the tutorial's section "
        f"2.3), at most {MAX_NUM_SAMPLES:,}; a second pass over the data that takes about "
        "N/K as long as the first "
        f"(N = K doubles the run time); 0 skips it; not with --method ais, which runs no "
        f"importance sampling (default: {DEFAULT_NAIVE_SAMPLES} or --num-samples, whichever "
        "is smaller)",
    )
    e.add_argument(
        "--ks",
        type=positive_set,
        help="IWAE group sizes, each at most K; not with --method ais (default: those of "
        "1,5,50,500 up to K)",
    )
    e.add_argument(
        "--method",
        choices=METHODS,
        default="is",
        help="is: importance sampling with the guide (K = --num-samples); ais: annealed "
        "importance sampling with HMC (--ais-*); both: side by side, with their paired "
        "difference (default is). A model without latent variables has an exact "
        "log-likelihood: it samples nothing, and --num-samples, --naive-samples, --ks and "
        "--batch-size do not change it (they are accepted, so that one command line "
        "serves every run)",
    )
    e.add_argument(
        "--ais-steps",
        type=at_least(1, MAX_AIS_STEPS),
        metavar="T",
        help=f"AIS: intermediate distributions, at most {MAX_AIS_STEPS:,} (default "
        f"{ais.DEFAULTS['num_steps']}). Every --ais-* option needs --method ais or both, or "
        "--bdmc",
    )
    e.add_argument(
        "--ais-chains",
        type=at_least(1, MAX_AIS_CHAINS),
        metavar="C",
        help=f"AIS: chains per point, at most {MAX_AIS_CHAINS:,} (default "
        f"{ais.DEFAULTS['num_chains']})",
    )
    e.add_argument(
        "--leapfrog-steps",
        type=at_least(1, MAX_LEAPFROG_STEPS),
        metavar="L",
        help=f"AIS: leapfrog steps per HMC transition, at most {MAX_LEAPFROG_STEPS} (default "
        f"{ais.DEFAULTS['leapfrog_steps']})",
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
        "(an upper bound), with the --ais-* settings; their gap says how close AIS gets; "
        "at most the points of the split (default 0: none)",
    )
    e.add_argument("--split", choices=SPLITS, default="test", help="(default test)")
    e.add_argument(
        "--limit",
        type=at_least(1),
        metavar="N",
        help="evaluate N evenly spaced points, at most those of the split",
    )
    e.add_argument(
        "--batch-size",
        type=at_least(1, MAX_BATCH_SIZE),
        default=100,
        help=f"data points per pass of the 10-particle ELBO, at most {MAX_BATCH_SIZE:,} "
        "(default 100)",
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
        metavar="N",
        help="points for the gap decomposition, at most those evaluated; needs "
        f"--gap-decomposition (default {DEFAULT_GAP_POINTS} or all, whichever is fewer)",
    )
    e.add_argument(
        "--gap-steps",
        type=at_least(0, MAX_GAP_STEPS),
        metavar="S",
        help=f"SVI steps per q*, at most {MAX_GAP_STEPS:,}; needs --gap-decomposition "
        f"(default {DEFAULT_GAP_STEPS})",
    )
    add_device(e)
    e.add_argument("--no-progress", action="store_true", help="hide progress bars")


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


def check_ais(model, data, args: argparse.Namespace) -> None:
    """Refuse AIS and BDMC where they cannot run, before any work (exit 2).

    :param model: the run's model.
    :param data: the tensors of the split evaluated, before ``--limit``.
    :param args: the parsed ``evaluate`` options.
    :raises UsageError: for an ``--ais-*`` option without AIS, AIS on a model it cannot
        run on, or ``--bdmc`` beyond the points of the split.
    """
    wanted = [f"--method {args.method}"] if args.method != "is" else []
    wanted += ["--bdmc"] if args.bdmc else []
    if not wanted:
        unused = [o for o in AIS_OPTIONS if getattr(args, o) is not None]
        if unused:
            flag = _flag(unused[0])
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


def check_options(args: argparse.Namespace) -> None:
    """Refuse an option that another one it needs is missing for, and fill in the defaults
    that depend on the others; before the run is read (exit 2).

    :param args: the parsed ``evaluate`` options; ``num_samples`` and ``gap_steps`` are
        set to their defaults where not given.
    :raises UsageError: for ``--gap-points`` or ``--gap-steps`` without
        ``--gap-decomposition``, for ``--naive-samples`` or ``--ks`` with ``--method
        ais``, which runs no importance sampling, and for ``--num-samples`` there unless
        ``--gap-decomposition`` uses it; for ``--ks`` beyond ``--num-samples``.
    """
    gap = [o for o in ("gap_points", "gap_steps") if getattr(args, o) is not None]
    if gap and not args.gap_decomposition:
        flag = _flag(gap[0])
        raise UsageError(
            f"{flag} sets the gap decomposition, which runs only with --gap-decomposition; "
            f"add it or drop {flag}"
        )
    if args.method == "ais":
        sampling = ["naive_samples", "ks"] + ([] if args.gap_decomposition else ["num_samples"])
        given = [o for o in sampling if getattr(args, o) is not None]
        if given:
            flag = _flag(given[0])
            raise UsageError(
                f"{flag} sets importance sampling, which --method ais does not run; use "
                f"--method both to run it beside AIS, or drop {flag}"
            )
    if args.num_samples is None:
        args.num_samples = DEFAULT_NUM_SAMPLES
    if args.gap_steps is None:
        args.gap_steps = DEFAULT_GAP_STEPS
    if args.ks and max(args.ks) > args.num_samples:
        raise UsageError(f"--ks {max(args.ks)} exceeds --num-samples {args.num_samples}")


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def check_sizes(data: tuple, args: argparse.Namespace) -> None:
    """Refuse ``--limit`` and ``--gap-points`` beyond the points there are (a report
    named for N points must hold N), and set the default ``--gap-points``.

    :param data: the tensors of the split evaluated, before ``--limit``.
    :param args: the parsed ``evaluate`` options; ``gap_points`` is set where not given.
    :raises UsageError: naming the option and the points there are.
    """
    n = len(data[0])
    if args.limit is not None and args.limit > n:
        raise UsageError(
            f"--limit {args.limit} exceeds the {n} points of the {args.split} split; ask "
            "for fewer, or drop --limit to evaluate them all"
        )
    evaluated = args.limit or n
    if args.gap_points is None:
        args.gap_points = min(DEFAULT_GAP_POINTS, evaluated)
    elif args.gap_points > evaluated:
        where = f"--limit {args.limit}" if args.limit else f"the {args.split} split"
        raise UsageError(
            f"--gap-points {args.gap_points} exceeds the {evaluated} points evaluated "
            f"({where}); ask for fewer"
        )


def naive_samples(args: argparse.Namespace) -> int:
    """K of the naive pass (z from the prior): ``--naive-samples`` as given, or by default
    :data:`DEFAULT_NAIVE_SAMPLES` capped at ``--num-samples``; 0 means no naive pass.

    :param args: the parsed ``evaluate`` options (``num_samples``, ``naive_samples``).
    """
    if args.naive_samples is None:
        return min(DEFAULT_NAIVE_SAMPLES, args.num_samples)
    return args.naive_samples
