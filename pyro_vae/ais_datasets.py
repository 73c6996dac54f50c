"""AIS and BDMC over every point of a split: per-point random streams, batches of points
and processes.

Point ``i`` of a split draws from streams seeded with
:func:`~pyro_vae.distributed.stream_seed` of the split's seed, the purpose and ``i``, so
its results depend neither on the other points, nor on the batches, nor on the number of
processes. :mod:`pyro_vae.ais` re-exports every public name here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch

from pyro_vae import distributed
from pyro_vae.ais_settings import Settings, check_count, schedule, with_defaults
from pyro_vae.annealing import AISResult, Annealer, ais_result, final_step_size
from pyro_vae.bdmc import BDMCResult, run_bdmc

#: chains x points per batched pass when ``points_per_batch`` is not given
DEFAULT_PAIRS_PER_BATCH = 2**11


def ais_dataset(
    model: Callable,
    guide: Callable | None,
    data: torch.Tensor | Sequence[torch.Tensor],
    *,
    seed: int | None = None,
    points_per_batch: int | None = None,
    progress: bool = False,
    **settings: Any,
) -> AISResult:
    """:func:`~pyro_vae.ais.annealed_importance_sampling` for every data point of a split.

    Point ``i`` draws from streams seeded with
    :func:`~pyro_vae.distributed.stream_seed` ``(seed, "ais", i)``, so its results do not
    depend on the other points, on the batches (up to floating-point rounding) or on the
    number of processes. Inside a process group every rank must call this with the same
    arguments: each runs its contiguous share of the points, and every rank returns all
    the results in the original order. Results move to the CPU.

    :param data: a tensor or tuple of tensors (the model's positional arguments) whose
        first dimension indexes the data points.
    :param int seed: the base of the per-point streams; ``None`` draws one from torch's
        global generator.
    :param int points_per_batch: points run together; by default
        ``DEFAULT_PAIRS_PER_BATCH // num_chains`` (at least 1), so memory depends on
        neither T nor the data set's size.
    :param bool progress: a progress bar over steps (rank 0 only).
    :param settings: ``num_steps``, ``num_chains``, ``leapfrog_steps``, ``init``,
        ``schedule_kind``, ``step_size``, ``adapt_rate`` as in
        :func:`~pyro_vae.ais.annealed_importance_sampling`.
    :returns: :class:`~pyro_vae.ais.AISResult`.
    """
    parts, checked = _over_points(
        lambda args, seeds, step: _ais_batch(model, guide, args, seeds, settings, step),
        data,
        seed,
        "ais",
        points_per_batch,
        settings,
        progress,
        "log P(x) by AIS",
    )
    log_w, acceptance, final_step = (torch.cat(p, dim=-1) for p in zip(*parts, strict=True))
    return ais_result(checked, log_w, acceptance, final_step)


def bdmc_dataset(
    model: Callable,
    guide: Callable | None,
    data: torch.Tensor | Sequence[torch.Tensor],
    *,
    site: str | None = None,
    seed: int | None = None,
    points_per_batch: int | None = None,
    progress: bool = False,
    **settings: Any,
) -> BDMCResult:
    """:func:`~pyro_vae.ais.bdmc` for every point of ``data``, one simulated point per real
    one: the real point supplies the model's other arguments (a conditional model's
    input) and the shape of its observation. Streams, batches and processes as in
    :func:`ais_dataset` (the streams are ``stream_seed(seed, "bdmc", i)``).

    :param str site: the observed site the last tensor of ``data`` holds.
    :returns: :class:`~pyro_vae.ais.BDMCResult`.
    """
    parts, checked = _over_points(
        lambda args, seeds, step: _bdmc_batch(model, guide, args, seeds, site, settings, step),
        data,
        seed,
        "bdmc",
        points_per_batch,
        settings,
        progress,
        "BDMC bounds",
        passes=2,
    )
    lower, upper, log_w, acceptance, steps, reverse_acceptance, simulated = zip(*parts, strict=True)
    forward = ais_result(checked, torch.cat(log_w, -1), torch.cat(acceptance), torch.cat(steps))
    simulated = tuple(torch.cat(t) for t in zip(*simulated, strict=True))
    return BDMCResult(
        torch.cat(lower), torch.cat(upper), forward, torch.cat(reverse_acceptance), simulated
    )


def _ais_batch(model, guide, args, seeds, settings, on_step):
    checked = Settings.make(**with_defaults(settings))
    annealer = Annealer(model, guide, args, {}, checked)
    betas = schedule(checked.num_steps, checked.schedule_kind)
    log_w, acceptance, steps = annealer.run(betas, seeds, on_step=on_step)
    return log_w, acceptance, final_step_size(checked, steps)


def _bdmc_batch(model, guide, args, seeds, site, settings, on_step):
    result = run_bdmc(model, guide, args, seeds, site, with_defaults(settings), on_step)
    f = result.forward
    return (
        result.lower,
        result.upper,
        f.log_weights,
        f.acceptance,
        f.step_size,
        result.reverse_acceptance,
        tuple(t.cpu() for t in result.data),
    )


def _over_points(
    run_batch, data, seed, purpose, points_per_batch, settings, progress, what, passes=1
):
    """Run ``run_batch(args, seeds, on_step)`` over this rank's share of the points in
    batches; gather every rank's results (moved to the CPU), in order."""
    from tqdm.auto import tqdm

    checked = Settings.make(**with_defaults(settings))
    data = tuple(data) if isinstance(data, (tuple, list)) else (data,)
    n = data[0].shape[0]
    if n == 0:
        raise ValueError("no data points to evaluate (the first dimension of data is 0)")
    if points_per_batch is None:
        points_per_batch = max(1, DEFAULT_PAIRS_PER_BATCH // checked.num_chains)
    check_count("points_per_batch", points_per_batch)
    if seed is None:
        seed = distributed.broadcast(int(torch.randint(0, 2**62, ()).item()))
    mine = distributed.shard(n)
    show = progress and distributed.is_main()
    total = len(mine) * checked.num_steps * passes
    label = f"{what}, T={checked.num_steps}, C={checked.num_chains}"
    parts = []
    with tqdm(total=total, desc=label, unit="pt-step", disable=not show) as bar:
        for start in range(mine.start, mine.stop, points_per_batch):
            index = range(start, min(start + points_per_batch, mine.stop))
            args = tuple(t[index.start : index.stop] for t in data)
            seeds = [distributed.stream_seed(seed, purpose, i) for i in index]
            out = run_batch(args, seeds, functools.partial(bar.update, len(index)))
            parts.append(_to_cpu(out))
    gathered = [p for rank in distributed.all_gather(parts) for p in rank]
    return gathered, checked


def _to_cpu(obj):
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, tuple):
        return tuple(_to_cpu(o) for o in obj)
    return obj


__all__ = ["DEFAULT_PAIRS_PER_BATCH", "ais_dataset", "bdmc_dataset"]
