"""``pyro-vae reproduce``: run every experiment and collect the results in one page.

Each experiment is a script ``experiments/NAME.py`` in the repository that declares,
after its docstring and imports, what the results page needs to know about it::

    TITLE = "Figure 2: a ring from N(0, I), and a VAE that learns it"  # section title
    PAGE = "ring.md"  # its discussion page in docs/
    MINUTES = 1  # expected wall minutes of the full run on 2 CPU cores
    ORDER = 1  # position on the results page

:func:`discover` reads these from the scripts' source without importing them, so
adding an experiment is adding its script. ``reproduce`` runs the experiments one
after another in fresh processes, each writing ``results.json``, ``results.md`` and
its figures to ``OUT/NAME/``, and then writes ``OUT/results.md`` with every table and
figure. The full run also copies that page and its figures into ``docs/``
(``docs/results.md`` and ``docs/results/``); ``--quick`` (tiny budgets, for CI and a
first look) leaves ``docs/`` alone.

The experiments are part of the repository, not of the installed package:
``reproduce`` needs a clone (``pip install -e .``).
"""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from pyro_vae.cli.results_page import Experiment, figures_of, publish, recorded_budget, results_page
from pyro_vae.errors import UsageError
from pyro_vae.io import write_text
from pyro_vae.parsing import integer, names, path

#: the constants every experiment script declares: the types their values may have, in words
DECLARATIONS = {
    "TITLE": ((str,), "a string"),
    "PAGE": ((str,), "a string"),
    "MINUTES": ((int, float), "a number"),
    "ORDER": ((int,), "an integer"),
}
#: scripts in ``experiments/`` that are not experiments (``_name.py`` ones are not either)
HELPERS = ("common",)


def discover(root: Path) -> tuple[Experiment, ...]:
    """The experiments of the repository at ``root``, in the order of the results page.

    Every ``root/experiments/*.py`` except ``common.py`` and names starting with ``_``
    is an experiment and must declare :data:`DECLARATIONS` as literal module-level
    assignments. They are read with :mod:`ast`, without importing the script: a script
    whose imports fail is still found (and fails when it runs).

    :param Path root: the repository (the folder that holds ``experiments/``).
    :returns: the experiments sorted by ``ORDER``, then by name.
    :raises UsageError: if there is no ``experiments/`` folder, or a script is not valid
        Python, lacks one of the constants, or gives one a value that is not a literal of
        the right type.
    """
    folder = root / "experiments"
    if not folder.is_dir():
        raise UsageError(f"no experiments: {folder} is not a folder")
    found = [
        _read_experiment(path)
        for path in sorted(folder.glob("*.py"))
        if path.stem not in HELPERS and not path.stem.startswith("_")
    ]
    return tuple(e for _, e in sorted(found, key=lambda pair: (pair[0], pair[1].name)))


def _read_experiment(path: Path) -> tuple[int, Experiment]:
    """``(ORDER, Experiment)`` from the module-level constants of the script at ``path``."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as e:
        raise UsageError(f"experiment script {path} is not valid Python: {e}") from None
    values = {}
    for node in tree.body:  # module level only; a later assignment wins, as in Python
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in DECLARATIONS:
            values[target.id] = value
    missing = [name for name in DECLARATIONS if name not in values]
    if missing:
        raise UsageError(
            f"experiment script {path} does not declare {', '.join(missing)}: every "
            f"experiment declares {', '.join(DECLARATIONS)} after its imports, as "
            'literals (TITLE = "...", PAGE = "NAME.md", MINUTES = 1, ORDER = 1)'
        )
    constants = {}
    for name, node in values.items():
        try:
            value = ast.literal_eval(node)
        except (ValueError, TypeError, SyntaxError):
            raise UsageError(
                f"experiment script {path}, line {node.lineno}: {name} must be a literal "
                f"(it is read without running the script), not {ast.unparse(node)}"
            ) from None
        types, kind = DECLARATIONS[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise UsageError(
                f"experiment script {path}, line {node.lineno}: {name} must be {kind}, "
                f"not {value!r}"
            )
        constants[name] = value
    experiment = Experiment(path.stem, constants["TITLE"], constants["PAGE"], constants["MINUTES"])
    return constants["ORDER"], experiment


def repository_root() -> Path:
    """The clone this package was installed from (editable install).

    :raises UsageError: if the experiments are not next to the package.
    """
    root = Path(__file__).resolve().parents[2]
    if not (root / "experiments" / "common.py").is_file():
        raise UsageError(
            f"the experiments are not next to the installed package ({root / 'experiments'} "
            "is missing); clone the repository and install it with `pip install -e .`"
        )
    return root


def add_parser(sub) -> None:
    """Register the ``reproduce`` subcommand on an ``argparse`` subparsers object."""
    try:
        experiments = discover(repository_root())
    except UsageError:  # not a clone, or a script lacks its constants: `reproduce` says so
        experiments = ()
    total = f"about {sum(e.minutes for e in experiments):.0f} minutes" if experiments else "hours"
    r = sub.add_parser(
        "reproduce",
        help=f"run every experiment ({total} one after another on 2 CPU cores, one per "
        "core at a time by default; --quick: "
        "about a minute) and collect the results",
    )
    r.add_argument(
        "--quick", action="store_true", help="tiny budgets: minutes, for CI and a first look"
    )
    r.add_argument(
        "--only",
        type=names,
        help="comma-separated subset of: "
        + (", ".join(e.name for e in experiments) or "the scripts in experiments/"),
    )
    r.add_argument(
        "--out",
        type=path,
        help="results folder, made if missing and checked writable before anything runs "
        "(default results/, or results/quick)",
    )
    r.add_argument(
        "--threads",
        type=integer,
        help=f"torch threads of each experiment, at most {MAX_THREADS}; not with --collect "
        "(default: the cores' share of each job, at least 1)",
    )
    r.add_argument(
        "--jobs",
        type=integer,
        help=f"experiments run at once, at most {MAX_JOBS}; not with --collect; each in its "
        "own process with --threads threads, "
        "the longest first (default: as many as the cores hold at --threads each; one "
        "thread each without --threads). Every experiment seeds itself, so the results "
        "do not depend on --jobs; they do depend on --threads in the last bits (matrix "
        "products add up in another order), which full budgets grow: the published "
        "pages were made with --jobs 1 --threads 2",
    )
    r.add_argument(
        "--collect",
        action="store_true",
        help="run nothing: rebuild the results page from the experiments already in --out",
    )
    r.set_defaults(func=cmd_reproduce)


#: the most torch threads per experiment and experiments at once: far more than the
#: cores of any one machine (each thread and job past the cores only waits), and small
#: enough for torch's thread count (a C int) and the pool of jobs
MAX_THREADS = 1024
MAX_JOBS = 1024


def jobs_and_threads(jobs: int | None, threads: int | None) -> tuple[int, int]:
    """``(--jobs, --threads)`` with the defaults filled in from the cores this process
    may use: one thread per job and a job per core, or as many jobs as the cores hold
    at the given threads each.

    :raises UsageError: for a value below 1, or above :data:`MAX_JOBS` or
        :data:`MAX_THREADS`.
    """
    for name, value, most in (("--jobs", jobs, MAX_JOBS), ("--threads", threads, MAX_THREADS)):
        if value is not None and value < 1:
            raise UsageError(f"{name} must be at least 1, got {value}")
        if value is not None and value > most:
            raise UsageError(f"{name} must be at most {most}, got {value}")
    if hasattr(os, "sched_getaffinity"):  # the cores this process may run on (Linux)
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    if threads is None:
        threads = max(1, cores // jobs) if jobs else 1
    if jobs is None:
        jobs = max(1, cores // threads)
    return jobs, threads


def cmd_reproduce(args: argparse.Namespace) -> int:
    """``pyro-vae reproduce``: see ``pyro-vae reproduce --help``."""
    root = repository_root()
    experiments = discover(root)
    known = {e.name: e for e in experiments}
    chosen = list(experiments)
    if args.only:
        unknown = [name for name in args.only if name not in known]
        if unknown:
            raise UsageError(
                f"unknown experiment(s) {', '.join(unknown)}; valid: {', '.join(known)}"
            )
        chosen = [known[name] for name in args.only]
    if args.collect and (args.jobs is not None or args.threads is not None):
        flag = "--jobs" if args.jobs is not None else "--threads"
        raise UsageError(f"{flag} sets how experiments run, and --collect runs none; drop {flag}")
    jobs, threads = jobs_and_threads(args.jobs, args.threads)
    out = args.out or (Path("results") / "quick" if args.quick else Path("results"))
    check_writable(out, collect=args.collect)
    if not args.quick and not args.collect:
        minutes = sum(e.minutes for e in chosen)
        print(
            f"pyro-vae: {len(chosen)} experiments, about {minutes:.0f} minutes one after "
            f"another on 2 CPU cores; {jobs} at a time with {threads} thread(s) each"
        )
    failed, seconds = [], {}
    to_run = [] if args.collect else chosen
    for stale in (p for e in to_run for p in figures_of(out / e.name)):  # an earlier run's
        stale.unlink()

    def run(i: int, experiment: Experiment) -> tuple[Experiment, int, str]:
        command = [
            sys.executable,
            str(root / "experiments" / f"{experiment.name}.py"),
            "--out",
            str(out / experiment.name),
            "--threads",
            str(threads),
            *(["--quick"] if args.quick else []),
        ]
        print(f"pyro-vae: [{i}/{len(to_run)}] {experiment.name}: {experiment.title}", flush=True)
        t0 = time.perf_counter()
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seconds[experiment.name] = time.perf_counter() - t0
        return experiment, done.returncode, done.stderr

    # the experiments are independent processes: threads here only wait for them
    # the longest first, so that no long one starts last while the other jobs idle
    by_length = sorted(enumerate(to_run, 1), key=lambda pair: -pair[1].minutes)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run, i, e) for i, e in by_length]
        for future in as_completed(futures):
            experiment, code, stderr = future.result()
            if code != 0:
                failed.append(experiment.name)
                print(stderr[-3000:], file=sys.stderr)
                print(f"pyro-vae: error: {experiment.name} failed (exit {code})")
            else:
                print(
                    f"pyro-vae:   {experiment.name} done in {seconds[experiment.name]:.0f} s",
                    flush=True,
                )
    failed.sort(key=[e.name for e in to_run].index)
    if args.collect:
        files = ("results.json", "results.md")
        missing = [e.name for e in chosen if not all((out / e.name / f).is_file() for f in files)]
        if missing:
            raise UsageError(
                f"--collect: no results of {', '.join(missing)} in {out}; run them first "
                f"(`pyro-vae reproduce --only {','.join(missing)}`)"
            )
    succeeded = [e for e in chosen if e.name not in failed]
    budgets = {e.name: recorded_budget(out / e.name) for e in succeeded}
    quick = args.quick or any(b.get("is_quick", True) for b in budgets.values())
    page = results_page(succeeded, out, seconds, quick=quick, failed=failed, docs=root / "docs")
    write_text(out / "results.md", page)
    print(f"pyro-vae: wrote {out / 'results.md'}")
    unpublishable = [
        name for name, b in budgets.items() if b.get("is_quick", True) or b.get("overrides")
    ]
    if not args.only and not failed and not unpublishable:
        publish(out, root / "docs", succeeded, seconds)
        print(f"pyro-vae: updated {root / 'docs' / 'results.md'} and docs/results/")
        # imported here: `python -m pyro_vae.cli.published` runs that module as a script
        from pyro_vae.cli.published import pages, refresh

        rewritten = [s for page in pages(root) for s in refresh(page, root, write=True)]
        print(f"pyro-vae: rewrote {len(rewritten)} number(s) and table(s) of the pages")
    elif not quick and not args.only and unpublishable:
        print(
            "pyro-vae: docs/results.md left as it was: the results of "
            f"{', '.join(unpublishable)} were not made with the default budgets"
        )
    if failed:
        print(f"pyro-vae: error: {len(failed)} experiment(s) failed: {', '.join(failed)}")
        return 1
    return 0


def check_writable(out: Path, collect: bool = False) -> None:
    """Make the results folder ``out`` (unless ``collect``, which reads one that must
    exist) and write and delete a file in it: refused here, before any experiment runs,
    rather than after the experiments have run.

    :raises UsageError: naming the folder and why it cannot hold the results.
    """
    if collect and not out.is_dir():
        raise UsageError(
            f"--collect: {out} is not a folder; give the --out of an earlier `pyro-vae reproduce`"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise UsageError(
            f"--out {out} cannot hold the results ({err.strerror or err}); choose a folder "
            "you may write to"
        ) from None
