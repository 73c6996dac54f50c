"""Importance-sampled log-likelihoods, IWAE bounds and the ELBO, per data point.

These functions take any Pyro ``model`` and ``guide`` (and the arguments they
are called with) whose data points are indexed by ``pyro.plate("data", N)``;
they know nothing about VAEs. For each data point ``x_i`` and samples
``z_k ~ q(z | x_i)`` they form the log weights

    ``log w_ik = log p(x_i, z_k) - log q(z_k | x_i)``

by tracing the guide and replaying the model under an outer particle plate,
then summing every site's ``log_prob`` over all dimensions except the particle
and data dimensions. From the stream of weights they compute, per data point:

- ``log P(x) ~ log (1/K) sum_k w_k`` (Doersch 2016, section 2.3: sample z from
  Q rather than from the prior), a stochastic lower bound whose bias vanishes
  as K grows;
- the ELBO ``(1/K) sum_k log w_k``, whose gap to ``log P(x)`` estimates
  ``D[Q(z|x) || P(z|x)]`` (Doersch eq. 5);
- the IWAE bounds ``L_k = E[log (1/k) sum_{j<=k} w_j]`` (Burda et al. 2016),
  estimated by averaging over disjoint groups of k samples; ``L_1`` is the ELBO;
- the effective sample size ``(sum w)^2 / sum w^2`` (Kong 1992);
- the Pareto k-hat of the weights' tail (Vehtari et al.): above 0.7 the estimate of
  ``log P(x)`` is unreliable at any practical K, whatever the ESS says
  (:func:`~pyro_vae.weights.pareto_khat`).

Particles are drawn in chunks and combined with a streaming ``logsumexp``, so
memory depends on the chunk size, not on K.

Pyro's own :func:`~pyro.infer.importance.vectorized_importance_weights` and
:class:`~pyro.infer.Importance` weight a whole batch jointly (one weight per
sample, summed over data points), which estimates ``log P(x_1, ..., x_N)``, not
per-point values; the tests use them only as cross-checks.

References:

- C. Doersch. Tutorial on Variational Autoencoders. arXiv:1606.05908, 2016.
- Y. Burda, R. Grosse, R. Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
- A. Kong. A note on importance sampling using standardized weights. 1992.
- A. Vehtari, D. Simpson, A. Gelman, Y. Yao, J. Gabry. Pareto Smoothed Importance
  Sampling. arXiv:1507.02646.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO

from pyro_vae import distributed
from pyro_vae.errors import UnreliableWeights
from pyro_vae.weights import KHAT_UNRELIABLE, Accumulator, log_weight_chunks

# The three results share log_px, elbo, ess, num_samples and khat. They stay three
# NamedTuples with every field written out: a NamedTuple cannot inherit fields, and a
# shared base would move fields that callers unpack by position (khat is the 6th field
# of a LogLikelihood, the 7th of an IWAEBounds, the 8th of a DatasetEvaluation). The
# shared fields are documented once, in LogLikelihood, and passed between the functions
# that fill them by name; the per-point tensors, each (N,), in the order of
# evaluate_dataset's rows:
_PER_POINT = ("log_px", "elbo", "ess", "khat")


class LogLikelihood(NamedTuple):
    """Per-data-point importance-sampling results, all in nats.

    :ivar log_px: ``(N,)`` estimate ``log (1/K) sum_k w_k`` of ``log P(x)``.
    :ivar elbo: ``(N,)`` mean log weight: the ELBO for ``proposal="guide"``.
    :ivar ess: ``(N,)`` effective sample size, between 1 and ``num_samples``.
    :ivar num_samples: K, samples per data point.
    :ivar proposal: ``"guide"`` or ``"prior"``.
    :ivar khat: ``(N,)`` Pareto k-hat of the weights (NaN where K is too small to fit
        one); above :data:`~pyro_vae.weights.KHAT_UNRELIABLE` the estimate is unreliable.
    """

    log_px: torch.Tensor
    elbo: torch.Tensor
    ess: torch.Tensor
    num_samples: int
    proposal: str
    khat: torch.Tensor | None = None


class IWAEBounds(NamedTuple):
    """IWAE bounds per data point, and the importance-sampling results they came with.

    :ivar ks: the group sizes k.
    :ivar bounds: ``(len(ks), N)``; row ``i`` estimates ``L_{ks[i]}`` from
        ``num_samples // ks[i]`` disjoint groups.
    :ivar log_px: as in :class:`LogLikelihood`.
    :ivar elbo: as in :class:`LogLikelihood`.
    :ivar ess: as in :class:`LogLikelihood`.
    :ivar num_samples: as in :class:`LogLikelihood`.
    :ivar khat: as in :class:`LogLikelihood`.
    """

    ks: tuple[int, ...]
    bounds: torch.Tensor
    log_px: torch.Tensor
    elbo: torch.Tensor
    ess: torch.Tensor
    num_samples: int
    khat: torch.Tensor | None = None


class DatasetEvaluation(NamedTuple):
    """Per-point results of :func:`evaluate_dataset` over a whole split, in nats: the
    fields of :class:`IWAEBounds` and the proposal.

    :ivar ks: as in :class:`IWAEBounds`.
    :ivar bounds: as in :class:`IWAEBounds`.
    :ivar log_px: as in :class:`LogLikelihood`.
    :ivar elbo: as in :class:`LogLikelihood`.
    :ivar ess: as in :class:`LogLikelihood`.
    :ivar num_samples: as in :class:`LogLikelihood`.
    :ivar proposal: as in :class:`LogLikelihood`.
    :ivar khat: as in :class:`LogLikelihood`.
    """

    ks: tuple[int, ...]
    bounds: torch.Tensor
    log_px: torch.Tensor
    elbo: torch.Tensor
    ess: torch.Tensor
    num_samples: int
    proposal: str
    khat: torch.Tensor | None = None

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean and standard error over data points of every per-point quantity.

        Keys: ``"elbo"``, ``"L_k"`` for each k, ``"log_px"``, ``"gap"``
        (``log_px - elbo``, an estimate of ``D[Q(z|x) || P(z|x)]``), ``"ess"``
        (with its ``"min"`` too) and ``"khat"`` (see :func:`khat_summary`).
        """
        rows = {"elbo": self.elbo}
        rows.update({f"L_{k}": b for k, b in zip(self.ks, self.bounds, strict=True)})
        rows.update(log_px=self.log_px, gap=self.log_px - self.elbo, ess=self.ess)
        out = {name: mean_and_stderr(v) for name, v in rows.items()}
        out["ess"]["min"] = float(self.ess.min())
        if self.khat is not None:
            out["khat"] = khat_summary(self.khat)
        return out


@torch.no_grad()
def log_weights(
    model: Callable,
    guide: Callable | None,
    *args: Any,
    num_samples: int = 1000,
    proposal: str = "guide",
    chunk_size: int | None = None,
    max_plate_nesting: int | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """All log importance weights, ``(num_samples, N)``: for small K and for inspection.

    :func:`log_likelihood` and :func:`iwae_bounds` compute their statistics from
    the same weights without holding them all in memory.

    :param model: Pyro model; data points indexed by ``pyro.plate("data", N)``.
    :param guide: Pyro guide with the model's signature (unused for ``"prior"``).
    :param args: positional arguments of model and guide.
    :param int num_samples: K.
    :param str proposal: ``"guide"``: ``z ~ guide``, ``log w = log p(x, z) - log q(z|x)``;
        ``"prior"``: ``z`` from the model's prior, ``log w = log p(x|z)``.
    :param int chunk_size: particles per vectorized pass; by default
        ``DEFAULT_PAIRS_PER_CHUNK // N``.
    :param int max_plate_nesting: plates the model nests; inferred when ``None``.
    :param kwargs: keyword arguments of model and guide.
    """
    return _concatenate(
        log_weight_chunks(
            model, guide, args, kwargs, num_samples, proposal, chunk_size, max_plate_nesting
        )
    )


@torch.no_grad()
def log_likelihood(
    model: Callable,
    guide: Callable | None,
    *args: Any,
    num_samples: int = 5000,
    proposal: str = "guide",
    chunk_size: int | None = None,
    max_plate_nesting: int | None = None,
    **kwargs: Any,
) -> LogLikelihood:
    """Importance-sampled ``log P(x)`` per data point, with the ELBO and ESS of the same samples.

    ``proposal="prior"`` is the naive estimator ``P(x) ~ (1/K) sum_k P(x | z_k)``,
    ``z_k ~ P(z)``, that Doersch (section 2) argues against: almost no prior sample
    explains a given x, so it needs enormous K.

    For a conditional model ``model(x, y)`` with target site ``"y"``, the same call
    estimates ``log P(y | x)``.

    Arguments as in :func:`log_weights`.

    :returns: :class:`LogLikelihood`.
    :raises ValueError: ``num_samples < 1``, an unknown proposal, no ``"data"`` plate,
        a model latent site the guide lacks, or a site outside the ``"data"`` plate.
    """
    per_point, _ = _estimate(
        model, guide, args, kwargs, num_samples, proposal, chunk_size, max_plate_nesting, ks=()
    )
    return LogLikelihood(**per_point, num_samples=num_samples, proposal=proposal)


@torch.no_grad()
def iwae_bounds(
    model: Callable,
    guide: Callable,
    *args: Any,
    ks: Sequence[int] = (1, 5, 50, 500),
    num_samples: int = 5000,
    proposal: str = "guide",
    chunk_size: int | None = None,
    max_plate_nesting: int | None = None,
    **kwargs: Any,
) -> IWAEBounds:
    """Per-data-point estimates of the IWAE bounds ``L_k`` for each k in ``ks``.

    The ``num_samples`` weights are split into ``num_samples // k`` disjoint groups
    of k; ``L_k`` is the mean over groups of ``log (1/k) sum_{group} w``
    (Burda et al. 2016, eq. 8). ``L_1`` is the ELBO, and ``L_k`` rises with k
    towards ``log P(x)`` in expectation.

    Other arguments as in :func:`log_weights`; with ``proposal="prior"`` the "bounds"
    are those of the prior as proposal.

    :returns: :class:`IWAEBounds`.
    :raises ValueError: as :func:`log_likelihood`, or a k outside ``[1, num_samples]``.
    """
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1 or max(ks) > num_samples:
        raise ValueError(f"every k in ks must lie in [1, num_samples={num_samples}], got {ks}")
    per_point, bounds = _estimate(
        model, guide, args, kwargs, num_samples, proposal, chunk_size, max_plate_nesting, ks
    )
    return IWAEBounds(ks, bounds, **per_point, num_samples=num_samples)


@torch.no_grad()
def mean_elbo(
    model: Callable,
    guide: Callable,
    data: torch.Tensor | Sequence[torch.Tensor],
    *,
    num_particles: int = 1,
    batch_size: int = 1000,
    max_plate_nesting: int = 1,
    seed: int | None = None,
    enumerate: bool = False,
) -> float:
    """ELBO per data point, averaged over ``data`` (no KL weight), in nats.

    A cheap summary for training curves, through ``Trace_ELBO``; for per-point
    values use :func:`log_likelihood` (its ``elbo`` field).

    :param model: Pyro model taking the data tensors as positional arguments.
    :param guide: matching guide.
    :param data: a tensor or tuple of tensors sharing their first dimension.
    :param int num_particles: samples of z per data point (vectorized).
    :param int batch_size: data points per forward pass.
    :param int max_plate_nesting: plates the model nests.
    :param int seed: if given, every batch draws from a stream of its own
        (:func:`~pyro_vae.distributed.stream_seed` of ``seed`` and the batch's first
        index) and torch's global random state is left as it was, so the result does
        not depend on the number of processes; by default the batches draw from torch's
        global generator.
    :param bool enumerate: the guide marks discrete sites for enumeration: sum over
        their values exactly (``TraceEnum_ELBO``).

    Inside a process group every rank scores a contiguous share of the batches and all
    ranks return the same mean.
    """
    data = tuple(data) if isinstance(data, (tuple, list)) else (data,)
    objective = (TraceEnum_ELBO if enumerate else Trace_ELBO)(
        num_particles=num_particles,
        vectorize_particles=num_particles > 1,
        max_plate_nesting=max_plate_nesting,
    )
    n = data[0].shape[0]
    starts = range(0, n, batch_size)
    total = torch.zeros((), device=data[0].device)
    with torch.random.fork_rng(devices=distributed.rng_devices(*data), enabled=seed is not None):
        for b in distributed.shard(len(starts)):
            start = starts[b]
            if seed is not None:
                torch.manual_seed(distributed.stream_seed(seed, "elbo", start))
            batch = tuple(t[start : start + batch_size] for t in data)
            if enumerate:  # TraceEnum_ELBO differentiates only where gradients are on
                total += objective.loss(model, guide, *batch)
            else:
                total += objective.differentiable_loss(model, guide, *batch)
    return -distributed.all_sum(total).item() / n


def _concatenate(chunks) -> torch.Tensor:
    # one private frame, as in _estimate: warnings raised inside point at the caller
    return torch.cat(list(chunks), dim=0)


def _estimate(model, guide, args, kwargs, num_samples, proposal, chunk_size, max_plate_nesting, ks):
    """Fold the weight chunks into per-point statistics: ``({name: (N,)} for each name in
    _PER_POINT, bounds)``, ``bounds`` ``(len(ks), N)``."""
    stats = Accumulator(num_samples, ks, khat=True)
    for chunk in log_weight_chunks(
        model, guide, args, kwargs, num_samples, proposal, chunk_size, max_plate_nesting
    ):
        stats.add(chunk)
    log_px, elbo, ess, bounds, khat = stats.finish()
    return dict(log_px=log_px, elbo=elbo, ess=ess, khat=khat), bounds


def khat_summary(khat: torch.Tensor) -> dict[str, float]:
    """What a reader needs of per-point Pareto k-hats: the mean and the largest of the
    finite ones, the share of points above :data:`~pyro_vae.weights.KHAT_UNRELIABLE`
    among those with a k-hat, how many points have equal weights (k-hat ``-inf``) and
    how many none (K too small to fit).

    :param khat: ``(N,)``, NaN where no k-hat was fitted.
    """
    fitted = khat[~torch.isnan(khat)].double()
    finite = fitted[torch.isfinite(fitted)]
    n = fitted.numel()
    return {
        "mean": float(finite.mean()) if finite.numel() else math.nan,
        "max": float(finite.max()) if finite.numel() else math.nan,
        "share_unreliable": float((fitted > KHAT_UNRELIABLE).double().mean()) if n else math.nan,
        "threshold": KHAT_UNRELIABLE,
        "equal_weights": int((fitted == -math.inf).sum()),
        "not_fitted": int(khat.numel() - n),
    }


def mean_and_stderr(values: torch.Tensor) -> dict[str, float]:
    """``{"mean": ..., "stderr": ...}`` over the first dimension; stderr is ``std / sqrt(N)``.

    :param values: ``(N,)`` tensor of per-point values.
    """
    values = values.double()
    n = values.numel()
    stderr = float(values.std() / n**0.5) if n > 1 else float("nan")
    return {"mean": float(values.mean()), "stderr": stderr}


@torch.no_grad()
def evaluate_dataset(
    model: Callable,
    guide: Callable | None,
    data: torch.Tensor | Sequence[torch.Tensor],
    *,
    num_samples: int = 5000,
    ks: Sequence[int] = (1, 5, 50, 500),
    proposal: str = "guide",
    seed: int | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
) -> DatasetEvaluation:
    """:func:`iwae_bounds` for every data point of a split, each from its own random stream.

    Data point ``i`` draws its ``num_samples`` samples from a stream seeded with
    :func:`~pyro_vae.distributed.stream_seed` ``(seed, proposal, i)``, so its results do
    not depend on the other points, on how they are batched, or on the number of
    processes. Points are scored one at a time, ``num_samples`` in chunks of
    ``chunk_size`` (by default 2^11) particles: on a CPU as fast as batching images
    (``benchmarks/evaluate.py``); on a GPU a pass holds at most K particles of one
    point. Torch's global random state is left as it was, apart from drawing the base
    seed when ``seed`` is ``None``.

    Inside a process group (:mod:`pyro_vae.distributed`) every rank must call this
    with the same arguments: each scores its contiguous share of the points and every
    rank returns all the results, in the original order, equal to one process's up
    to floating-point reduction order.

    :param data: a tensor or tuple of tensors (the model's positional arguments)
        whose first dimension indexes the data points; the model's ``"data"`` plate
        must run over that dimension.
    :param int seed: the base of the per-point streams; ``None`` draws one from torch's
        global generator (so ``pyro.set_rng_seed`` makes a call repeatable).
    :param bool progress: show a progress bar over data points (rank 0 only).

    Other arguments as in :func:`iwae_bounds`. Results move to the CPU.

    :returns: :class:`DatasetEvaluation`.
    """
    from tqdm.auto import tqdm

    data = tuple(data) if isinstance(data, (tuple, list)) else (data,)
    n = data[0].shape[0]
    if n == 0:
        raise ValueError("no data points to evaluate (the first dimension of data is 0)")
    ks = tuple(int(k) for k in ks)
    if seed is None:
        seed = distributed.broadcast(int(torch.randint(0, 2**62, ()).item()))
    devices = distributed.rng_devices(*data)
    parts = []
    show = progress and distributed.is_main()
    with (
        torch.random.fork_rng(devices=devices),
        tqdm(total=n, desc=f"log P(x), K={num_samples}", unit="pt", disable=not show) as bar,
    ):
        for i in distributed.shard(n):
            torch.manual_seed(distributed.stream_seed(seed, proposal, i))
            point = tuple(t[i : i + 1] for t in data)
            res = iwae_bounds(
                model,
                guide,
                *point,
                ks=ks,
                num_samples=num_samples,
                proposal=proposal,
                chunk_size=chunk_size,
            )
            # (len(ks) + len(_PER_POINT), 1): the bounds, then the per-point rows
            parts.append(torch.cat([res.bounds, *(getattr(res, f)[None] for f in _PER_POINT)]))
            bar.update(distributed.world_size())  # the ranks advance together
    mine = torch.cat(parts, dim=1).cpu() if parts else torch.empty(len(ks) + len(_PER_POINT), 0)
    rows = torch.cat(distributed.all_gather(mine), dim=1)
    per_point = dict(zip(_PER_POINT, rows[len(ks) :], strict=True))
    if proposal == "guide":
        _warn_if_unreliable(per_point["khat"])
    return DatasetEvaluation(
        ks, rows[: len(ks)], **per_point, num_samples=num_samples, proposal=proposal
    )


#: the share of points with k-hat above 0.7 from which :func:`evaluate_dataset` warns
KHAT_WARN_SHARE = 0.1


def _warn_if_unreliable(khat: torch.Tensor) -> None:
    share = khat_summary(khat)["share_unreliable"]
    if share > KHAT_WARN_SHARE:
        warnings.warn(
            f"the Pareto k-hat of the importance weights is above {KHAT_UNRELIABLE} for "
            f"{share:.0%} of the {len(khat)} points: there log P may be far too low at any "
            "practical number of samples (Vehtari et al.); check it against annealed "
            "importance sampling",
            UnreliableWeights,
            stacklevel=4,  # the caller of evaluate_dataset, past torch.no_grad's wrapper
        )
