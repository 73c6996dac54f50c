"""Per-data-point log importance weights and their streaming statistics.

The machinery behind :mod:`pyro_vae.evaluate` (and the per-point densities of
:mod:`pyro_vae.ais`): trace the guide and replay the model under an outer particle
plate, sum each site's ``log_prob`` over every dimension but the particle and
``"data"`` dimensions, and fold the resulting ``(chunk, N)`` tensors into running
per-point statistics, the Pareto k-hat of the weights' tail among them.

A discrete latent site of the model that the guide does not propose (a class label,
say) is summed out exactly: the model runs under Pyro's parallel enumeration, and the
log joint is a log-sum-exp over the enumerated values, so the weight of a particle is
``sum_y p(x, y, z) / q(z|x)``.

References:

- A. Vehtari, D. Simpson, A. Gelman, Y. Yao, J. Gabry. Pareto Smoothed Importance
  Sampling. arXiv:1507.02646 (JMLR 2024).
- Y. Yao, A. Vehtari, D. Simpson, A. Gelman. Yes, but Did It Work?: Evaluating
  Variational Inference. ICML 2018.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import NamedTuple

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer import config_enumerate
from pyro.ops.stats import fit_generalized_pareto

#: particle-data pairs per chunk when ``chunk_size`` is not given. Memory is a few
#: times (pairs x the model's largest per-point tensor). Measured on a 2-core CPU
#: with a 784-400-20 VAE: 2**11 ran 1.6x faster than 2**14, whose 51 MB temporaries
#: are freshly mapped (and page-faulted) every chunk; on a GPU pass a larger chunk_size.
DEFAULT_PAIRS_PER_CHUNK = 2**11
PROPOSALS = ("guide", "prior")
#: the name of the outer plate that vectorizes particles (importance samples, AIS chains)
PARTICLE_PLATE = "_evaluate_particles"
#: Pareto k-hat above which importance sampling is unreliable (Vehtari et al., section 3.2:
#: the estimate's error converges too slowly for any practical K)
KHAT_UNRELIABLE = 0.7
#: the fewest tail weights that :func:`pareto_khat` fits (Pyro's ``psis_diagnostic``)
MIN_TAIL = 10
#: tail weights, relative to the largest, that differ by no more than this are equal
_TIED = 1e-12


class Layout(NamedTuple):
    """Where the data points are in a model's plates.

    :ivar num_points: the size of the ``"data"`` plate.
    :ivar data_dim: its (negative) dim.
    :ivar max_plate_nesting: plates the model and guide nest.
    """

    num_points: int
    data_dim: int
    max_plate_nesting: int
    #: discrete latent sites of the model that the guide leaves out, summed out exactly
    enumerated: tuple[str, ...] = ()


def log_weight_chunks(
    model, guide, args, kwargs, num_samples, proposal, chunk_size, max_plate_nesting
) -> Iterator[torch.Tensor]:
    """Yield ``(chunk, N)`` log-weight tensors whose chunks add up to ``num_samples``."""
    if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples}")
    num_samples = int(num_samples)
    if proposal not in PROPOSALS:
        raise ValueError(f"unknown proposal {proposal!r}; valid: {', '.join(PROPOSALS)}")
    if proposal == "guide" and guide is None:
        raise ValueError("proposal='guide' needs a guide")
    layout = inspect_layout(model, guide if proposal == "guide" else None, args, kwargs)
    max_plate_nesting = max(layout.max_plate_nesting, max_plate_nesting or 0)
    if chunk_size is None:
        chunk_size = max(1, DEFAULT_PAIRS_PER_CHUNK // layout.num_points)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    done = 0
    while done < num_samples:
        size = min(chunk_size, num_samples - done)
        yield _chunk(model, guide, args, kwargs, size, proposal, layout, max_plate_nesting)
        done += size


def _chunk(model, guide, args, kwargs, size, proposal, layout, max_plate_nesting) -> torch.Tensor:
    if layout.enumerated:  # sum the discrete sites the guide leaves out
        model = poutine.enum(
            config_enumerate(model, default="parallel", expand=False),
            first_available_dim=-(max_plate_nesting + 2),
        )
    with pyro.plate(PARTICLE_PLATE, size, dim=-(max_plate_nesting + 1)):
        if proposal == "guide":
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
                *args, **kwargs
            )
        else:
            guide_trace = None
            model_trace = poutine.trace(model).get_trace(*args, **kwargs)
    shape = (size, layout.num_points)
    log_w = torch.zeros(shape, device=_device(model_trace))
    if layout.enumerated:
        log_w = log_w + _summed_out(model_trace, layout, max_plate_nesting, shape)
    else:
        for site in sample_sites(model_trace):
            if proposal == "guide" or site["is_observed"]:
                log_w = log_w + site_log_prob(site, layout, max_plate_nesting, shape)
    if guide_trace is not None:
        for site in sample_sites(guide_trace):
            log_w = log_w - site_log_prob(site, layout, max_plate_nesting, shape)
    return log_w


def _summed_out(model_trace, layout: Layout, max_plate_nesting: int, shape) -> torch.Tensor:
    """``log sum_y p(x, y, z)`` per particle and point: every site's log density (with
    the enumerated values of the discrete sites in dims left of the particle plate),
    summed per point over the other plates, added up, then log-sum-exp'd over the
    enumerated dims. Exact where each enumerated site sits in the ``"data"`` plate
    alone, as :func:`inspect_layout` checks: one value per data point, shared by the
    point's sites in nested plates."""
    plates = max_plate_nesting + 1
    terms = []
    for site in sample_sites(model_trace):
        log_p = scale_and_mask(site["fn"].log_prob(site["value"]), mask=site["mask"])
        enum_dims = max(0, log_p.dim() - plates)
        lead, rest = log_p.shape[:enum_dims], log_p.shape[enum_dims:]
        values = log_p.reshape(-1, *rest) if enum_dims else log_p.unsqueeze(0)
        summed = [per_point_sum(v, site["name"], layout, max_plate_nesting, shape) for v in values]
        terms.append(torch.stack(summed).reshape(*lead, *shape) if enum_dims else summed[0])
    joint = sum(terms[1:], terms[0])
    enum_dims = joint.dim() - 2
    return joint.logsumexp(tuple(range(enum_dims))) if enum_dims else joint


def site_log_prob(site, layout: Layout, max_plate_nesting: int, shape) -> torch.Tensor:
    """A site's masked ``log_prob``, summed per particle and data point -> ``shape``."""
    log_p = site["fn"].log_prob(site["value"])
    log_p = scale_and_mask(log_p, mask=site["mask"])  # masks count; poutine.scale does not
    return per_point_sum(log_p, site["name"], layout, max_plate_nesting, shape)


def per_point_sum(values: torch.Tensor, name: str, layout: Layout, max_plate_nesting: int, shape):
    """Sum a tensor of a site's batch shape over every dim but the particle and data dims.

    :param values: batch-shaped: plates right-aligned, the particle plate at
        ``-(max_plate_nesting + 1)``.
    :param str name: the site, for the error message.
    :param int max_plate_nesting: the model's plates, not counting the particle plate.
    :param shape: ``(particles, num_points)``, the result's shape.
    """
    plates = max_plate_nesting + 1  # with the particle plate
    if values.dim() > plates:
        raise ValueError(
            f"site {name!r} has batch shape {tuple(values.shape)} with more dims than "
            f"its plates ({plates} including particles); declare extra dims with .to_event()"
        )
    values = values.reshape((1,) * (plates - values.dim()) + values.shape)
    keep = {0, plates + layout.data_dim}  # particle dim, data dim (as positive indices)
    other = [d for d in range(plates) if d not in keep]
    if other:
        values = values.sum(other, keepdim=True)
    return values.reshape(values.shape[0], -1).expand(shape)


def inspect_layout(model, guide, args, kwargs) -> Layout:
    """Trace once without particles: find the data plate, check the sites, count plates.

    :param guide: checked against the model's latent sites; ``None`` for none.
    :raises ValueError: no or a subsampled ``"data"`` plate, a site outside it, or a
        guide whose sites differ from the model's latent sites.
    """
    with poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs) if guide else None
        runner = poutine.replay(model, trace=guide_trace) if guide_trace else model
        model_trace = poutine.trace(runner).get_trace(*args, **kwargs)
    traces = [t for t in (model_trace, guide_trace) if t is not None]
    frames = [f for t in traces for s in sample_sites(t) for f in s["cond_indep_stack"]]
    data_frames = {(f.dim, f.size) for f in frames if f.name == "data"}
    subsampled = {
        (f.size, f.full_size)
        for f in frames
        if f.name == "data" and f.full_size not in (None, f.size)
    }
    if subsampled:
        (size, full), *_ = subsampled
        raise ValueError(
            f"the 'data' plate subsamples {size} of {full} data points; each chunk of "
            "particles would see other points. Pass the batch to evaluate explicitly, "
            "without subsample_size or subsample"
        )
    if not data_frames:
        raise ValueError(
            "no pyro.plate('data', N) found: the evaluator needs the model's data points "
            "indexed by a plate named 'data'"
        )
    if len(data_frames) > 1:
        raise ValueError(f"the 'data' plate is used with different dims or sizes: {data_frames}")
    ((data_dim, num_points),) = data_frames
    if data_dim is None or data_dim >= 0:
        raise ValueError("the 'data' plate needs a negative dim")
    for trace, role in ((model_trace, "model"), (guide_trace, "guide")):
        if trace is None:
            continue
        for site in sample_sites(trace):
            if not any(f.name == "data" for f in site["cond_indep_stack"]):
                raise ValueError(
                    f"{role} site {site['name']!r} is outside the 'data' plate; a per-point "
                    "log-likelihood needs every sample site inside it"
                )
    enumerated: tuple[str, ...] = ()
    if guide_trace is not None:
        latent = [s for s in sample_sites(model_trace) if not s["is_observed"]]
        guide_latent = {s["name"] for s in sample_sites(guide_trace)}
        left_out = [s for s in latent if s["name"] not in guide_latent]
        missing = sorted(s["name"] for s in left_out if not _summable(s))
        if missing:
            raise ValueError(
                f"the guide has no site for the model's latent site(s) {', '.join(missing)}; "
                "importance weights need q to propose every continuous latent variable "
                "(a discrete one in the 'data' plate alone is summed out)"
            )
        enumerated = tuple(s["name"] for s in left_out)
        extra = sorted(guide_latent - {s["name"] for s in sample_sites(model_trace)})
        if extra:
            raise ValueError(f"the guide samples site(s) {', '.join(extra)} that the model lacks")
    if any(
        s["scale"] is not None and not _is_one(s["scale"]) for t in traces for s in sample_sites(t)
    ):
        warnings.warn(
            "poutine.scale factors in the model or guide are ignored: the estimates are of "
            "the unscaled log-densities",
            stacklevel=6,
        )
    max_plate_nesting = max([-f.dim for f in frames if f.dim is not None] + [1])
    return Layout(int(num_points), int(data_dim), max_plate_nesting, enumerated)


def _summable(site) -> bool:
    """A latent site the evaluator can sum out: discrete with a finite support, in the
    ``"data"`` plate and no other."""
    plates = [f.name for f in site["cond_indep_stack"]]
    return site["fn"].has_enumerate_support and plates == ["data"]


def sample_sites(trace) -> list[dict]:
    """The sample sites of a trace that carry a log-density (no plates, particles or
    ``pyro.deterministic`` sites), in order."""
    return [
        s
        for s in trace.nodes.values()
        if s["type"] == "sample"
        and s["name"] != PARTICLE_PLATE
        and not _is_plate_site(s)
        and not s["infer"].get("_deterministic", False)  # pyro.deterministic: log_prob 0
    ]


def _is_plate_site(site) -> bool:
    return site["infer"].get("_do_not_trace", False) or type(site["fn"]).__name__ == "_Subsample"


def _is_one(scale) -> bool:
    return bool(torch.all(torch.as_tensor(scale) == 1))


def _device(trace) -> torch.device:
    for site in sample_sites(trace):
        return site["value"].device
    return torch.device("cpu")


def tail_size(num_samples: int) -> int:
    """How many of K weights form the tail that k-hat is fitted to: ``min(K / 5, 3 sqrt(K))``,
    rounded up (Vehtari et al., section 3; Pyro's ``psis_diagnostic``)."""
    return math.ceil(min(0.2 * num_samples, 3.0 * math.sqrt(num_samples)))


def pareto_khat(top: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Pareto k-hat per data point from the largest log weights of each.

    The weights above the ``(M + 1)``-th largest (``M =`` :func:`tail_size`), relative to
    it, are fitted by a generalized Pareto distribution with
    :func:`pyro.ops.stats.fit_generalized_pareto`; its shape k says how heavy the tail of
    the weights is. Below 0.5 the weights have a finite variance; up to
    :data:`KHAT_UNRELIABLE` (0.7) importance sampling converges at a practical rate;
    above it, the estimate can be far off at any practical K, whatever the ESS says.
    This is the rule of Pyro's :func:`~pyro.infer.importance.psis_diagnostic`, applied
    to each point's own weights.

    :param top: ``(>= M + 1, N)``: at least the ``M + 1`` largest log weights of each of
        N points, in any order.
    :param int num_samples: K, the number of weights they were taken from.
    :returns: ``(N,)`` double; NaN where fewer than :data:`MIN_TAIL` weights lie above the
        cutoff (K too small, or most weights tied), or where Pyro's fit degenerates;
        ``-inf`` where the weights above the cutoff are equal to 12 digits, the limit
        k -> -inf of a tail of zero width (the proposal is the posterior, or the
        posterior puts its mass on a few points, as a discrete latent's does).
    """
    m = tail_size(num_samples)
    top = top.detach().double().cpu().sort(dim=0, descending=True).values[: m + 1]
    top = top - top[:1]  # the largest log weight is 0
    out = torch.full((top.shape[1],), math.nan, dtype=torch.double)
    for i in range(top.shape[1]):
        lw = top[:, i]
        if not torch.isfinite(lw).all() or lw.shape[0] < m + 1:
            continue
        cutoff = max(math.log(1e-15), float(lw[m]))
        tail = lw[lw > cutoff]
        if tail.numel() < MIN_TAIL:
            continue
        if float(tail.max() - tail.min()) <= _TIED:  # the tail's weights are equal
            out[i] = -math.inf
            continue
        try:
            out[i] = fit_generalized_pareto(tail.exp() - math.exp(cutoff))[0]
        except ZeroDivisionError:  # Pyro's grid of fits degenerated: every weight vanished
            continue
    return out


class Accumulator:
    """Running per-point statistics of a stream of ``(chunk, N)`` log weights.

    :param int num_samples: K, the weights that will be added in all.
    :param ks: the IWAE group sizes.
    :param bool khat: keep each point's largest ``tail_size(K) + 1`` weights for
        :func:`pareto_khat`.
    """

    def __init__(self, num_samples: int, ks: tuple[int, ...], khat: bool = False) -> None:
        self.num_samples = num_samples
        self.ks = ks
        self.lse = self.lse2 = self.total = None
        self.group_sum: list[torch.Tensor | None] = [None] * len(ks)
        self.leftover: list[torch.Tensor | None] = [None] * len(ks)
        self.keep = tail_size(num_samples) + 1 if khat else 0
        self.top: torch.Tensor | None = None

    def add(self, log_w: torch.Tensor) -> None:
        chunk_lse = torch.logsumexp(log_w, 0)
        chunk_lse2 = torch.logsumexp(2 * log_w, 0)
        chunk_total = log_w.sum(0)
        if self.lse is None:
            self.lse, self.lse2, self.total = chunk_lse, chunk_lse2, chunk_total
        else:
            self.lse = torch.logaddexp(self.lse, chunk_lse)
            self.lse2 = torch.logaddexp(self.lse2, chunk_lse2)
            self.total = self.total + chunk_total
        for i, k in enumerate(self.ks):
            buffer = log_w if self.leftover[i] is None else torch.cat([self.leftover[i], log_w])
            full = buffer.shape[0] // k
            if full:
                groups = buffer[: full * k].reshape(full, k, -1)  # (groups, k, N)
                bound_sum = (torch.logsumexp(groups, 1) - math.log(k)).sum(0)
                self.group_sum[i] = (
                    bound_sum if self.group_sum[i] is None else self.group_sum[i] + bound_sum
                )
            self.leftover[i] = buffer[full * k :]
        if self.keep:
            pool = log_w if self.top is None else torch.cat([self.top, log_w])
            self.top = pool.topk(min(self.keep, pool.shape[0]), dim=0).values  # (<= keep, N)

    def finish(self):
        """``(log_px, elbo, ess, bounds, khat)`` per point; ``bounds`` is ``None`` without
        group sizes, ``khat`` without ``khat=True``."""
        log_px = self.lse - math.log(self.num_samples)
        elbo = self.total / self.num_samples
        ess = torch.exp(2 * self.lse - self.lse2)
        bounds = (
            torch.stack(
                [s / (self.num_samples // k) for s, k in zip(self.group_sum, self.ks, strict=True)]
            )
            if self.ks
            else None
        )
        khat = pareto_khat(self.top, self.num_samples).to(log_px) if self.keep else None
        _warn_if_degenerate(log_px, elbo)
        return log_px, elbo, ess, bounds, khat


def _warn_if_degenerate(log_px: torch.Tensor, elbo: torch.Tensor) -> None:
    nan = int(torch.isnan(log_px).sum() + torch.isnan(elbo).sum())
    if nan:
        warnings.warn(
            f"{nan} per-point estimates are NaN: some log weights were NaN (a NaN in the model "
            "or guide's parameters or data?)",
            stacklevel=6,
        )
    neg_inf_elbo = int((elbo == -math.inf).sum())
    if neg_inf_elbo:
        warnings.warn(
            f"the ELBO is -inf for {neg_inf_elbo} data point(s): some importance weight is "
            "zero there (the model gives a sample zero density)",
            stacklevel=6,
        )
    neg_inf = int((log_px == -math.inf).sum())
    if neg_inf:
        warnings.warn(
            f"every importance weight is zero for {neg_inf} data point(s), so log P(x) = -inf "
            "there: the proposal never lands where the model gives the data positive density; "
            "use the guide as proposal or more samples",
            stacklevel=6,
        )
    pos_inf = int((log_px == math.inf).sum())
    if pos_inf:
        warnings.warn(
            f"{pos_inf} per-point estimates are +inf: a log weight overflowed", stacklevel=6
        )
