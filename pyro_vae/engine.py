"""Objectives and training steps: what one gradient step of :func:`pyro_vae.fit` does.

Two engines compute the same estimator and the same Adam updates:

- ``"svi"``: :class:`pyro.infer.SVI` with :class:`pyro.optim.Adam`, the textbook
  Pyro loop. ``pyro.optim`` keeps one torch optimizer per parameter tensor and
  looks parameters up in the param store every step, and ``SVI.step`` returns
  a Python float (a device sync per step on a GPU).
- ``"fast"`` (default): the objective's ``differentiable_loss`` with one
  :class:`torch.optim.Adam` over ``module.parameters()``; the loss stays on the
  device. Adam acts element-wise, so the updates equal ``"svi"``'s. Nothing reads
  Pyro's param store here, so the model runs without registering its networks in it
  (:meth:`~pyro_vae.models.base.Model.outside_param_store`). Pyro's ``RenyiELBO`` has
  no ``differentiable_loss``; :class:`DifferentiableRenyiELBO` adds one.

Inside a process group (:mod:`pyro_vae.distributed`) both engines run the objective
as the forward pass of an :class:`Objective` module wrapped in
:class:`~torch.nn.parallel.DistributedDataParallel`: DDP averages gradients only of
parameters reached by a forward call through the module it wraps, and Pyro would
otherwise call the model's ``model`` and ``guide`` methods behind its back. Each rank
scores its share of the global batch, and its loss is multiplied by the number of
ranks before ``backward``, so that DDP's average is the gradient of the whole batch's
sum, exactly as in one process.

The KL weight (beta, warm-up) multiplies the log-densities of every latent
sample site in both model and guide (:func:`scale_latents`), so for
``Trace_ELBO`` the objective is ``E_q[log P(x|z)] - beta * KL``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, NamedTuple

import pyro
import torch
from pyro.infer import SVI, RenyiELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.util import get_dependent_plate_dims, is_identically_zero, torch_sum
from pyro.poutine.scale_messenger import ScaleMessenger
from torch import nn

from pyro_vae import distributed
from pyro_vae.errors import UsageError

OBJECTIVES = ("elbo", "mean-field", "iwae")
ENGINES = ("fast", "svi")


class LatentScaleMessenger(ScaleMessenger):
    """``poutine.scale`` restricted to latent (unobserved) sample sites.

    See :func:`scale_latents`.
    """

    def _process_message(self, msg) -> None:
        if msg["type"] == "sample" and not msg["is_observed"]:
            super()._process_message(msg)


def scale_latents(fn: Callable, scale: float) -> Callable:
    """Wrap a model or guide so the log-densities of its latent sites are multiplied by ``scale``.

    Applied to both model and guide, it multiplies ``log P(z)`` and ``log Q(z|x)``
    by ``scale`` and leaves ``log P(x|z)`` alone: for ``Trace_ELBO`` the objective
    becomes ``E_q[log P(x|z)] - scale * KL``, the beta-VAE weight and the KL
    warm-up of Bowman et al. (2016) and Sønderby et al. (2016).

    :param fn: a Pyro model or guide.
    :param float scale: the KL weight; must be > 0, as for ``poutine.scale``.
    :returns: the wrapped callable.
    """
    return LatentScaleMessenger(scale)(fn)


def make_objective(name: str, num_particles: int = 1, max_plate_nesting: int = 1):
    """Build a Pyro objective by name.

    :param str name: ``"elbo"`` (``Trace_ELBO``), ``"mean-field"``
        (``TraceMeanField_ELBO``, analytic KL) or ``"iwae"`` (``RenyiELBO(alpha=0)``).
    :param int num_particles: samples per data point, vectorized when > 1.
    :param int max_plate_nesting: plates the model nests (needed to vectorize particles).
    :returns: a :class:`pyro.infer.ELBO` instance.
    :raises UsageError: for an unknown name.
    """
    kwargs = dict(
        num_particles=num_particles,
        vectorize_particles=num_particles > 1,
        max_plate_nesting=max_plate_nesting,
    )
    if name == "elbo":
        return Trace_ELBO(**kwargs)
    if name == "mean-field":
        return TraceMeanField_ELBO(**kwargs)
    if name == "iwae":
        return DifferentiableRenyiELBO(alpha=0.0, **kwargs)
    raise UsageError(f"unknown objective {name!r}; valid names: {', '.join(OBJECTIVES)}")


class DifferentiableRenyiELBO(RenyiELBO):
    """Pyro's :class:`~pyro.infer.RenyiELBO` with a ``differentiable_loss``.

    It forms ``loss_and_grads``'s two quantities from the same traces
    (``RenyiELBO._get_traces``), summed over the same plates: the per-particle log
    weights, whose log-mean-exp gives the value, and the surrogate whose gradient,
    weighted by the normalized weights, is the estimator. It returns
    ``value + surrogate - surrogate.detach()``: a tensor whose value is
    ``RenyiELBO.loss``'s and whose gradient is the one ``loss_and_grads`` accumulates,
    which the caller can scale and backpropagate (through
    ``DistributedDataParallel``, say).
    """

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The negative Rényi bound as a differentiable 0-dim tensor.

        :raises NotImplementedError: for a guide site whose samples are partly
            reparameterized, as ``RenyiELBO.loss_and_grads`` does.
        """
        log_weights, surrogates = [], []
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
            log_w, surrogate = 0.0, 0.0
            for site in model_trace.nodes.values():
                if site["type"] == "sample":
                    log_p = torch_sum(site["log_prob"], sum_dims)
                    log_w, surrogate = log_w + log_p.detach(), surrogate + log_p
            for site in guide_trace.nodes.values():
                if site["type"] != "sample":
                    continue
                log_q = torch_sum(site["log_prob"], sum_dims)
                log_w = log_w - log_q.detach()
                _, score_function, entropy = site["score_parts"]
                if not is_identically_zero(entropy):
                    if not is_identically_zero(score_function):
                        raise NotImplementedError(
                            f"guide site {site['name']!r} is partly reparameterized, which "
                            "RenyiELBO does not support"
                        )
                    surrogate = surrogate - log_q
                elif not is_identically_zero(score_function):
                    surrogate = surrogate + self.alpha / (1.0 - self.alpha) * log_q
            log_weights.append(torch.as_tensor(log_w))
            surrogates.append(torch.as_tensor(surrogate))
        if self.vectorize_particles and self.num_particles > 1:
            log_w, surrogate = log_weights[0], surrogates[0]
        else:
            log_w, surrogate = torch.stack(log_weights), torch.stack(surrogates)
        scaled = (1.0 - self.alpha) * log_w
        log_mean = torch.logsumexp(scaled, dim=0, keepdim=True) - math.log(self.num_particles)
        value = log_mean.sum() / (1.0 - self.alpha)
        weighted = ((scaled - log_mean).exp() * surrogate).sum() / self.num_particles
        return -(value + weighted - weighted.detach())


class Objective(nn.Module):
    """One step's loss as a module, so that DDP can wrap it.

    ``forward(batch, weight)`` runs the Pyro objective's ``differentiable_loss`` on the
    model's ``model`` and ``guide`` (latent sites scaled by the KL ``weight``) and
    returns the negative objective summed over the batch. The model is a submodule,
    so DDP sees its parameters.

    :param model: a :class:`~pyro_vae.models.base.Model`.
    :param loss_fn: a Pyro ELBO with ``differentiable_loss`` (see :func:`make_objective`).
    :param bool register: run ``model`` and ``guide`` registering their networks in
        Pyro's param store (``pyro.optim`` finds parameters there); ``False`` for an
        optimizer that holds ``model.parameters()`` itself
        (:meth:`~pyro_vae.models.base.Model.outside_param_store`).
    """

    def __init__(self, model: nn.Module, loss_fn, register: bool = True) -> None:
        super().__init__()
        self.vae = model
        self.loss_fn = loss_fn
        bypass = getattr(model, "outside_param_store", None)
        self._context = bypass if (bypass is not None and not register) else nullcontext

    def forward(self, batch: tuple[torch.Tensor, ...], weight: float) -> torch.Tensor:
        if batch[0].shape[0] == 0:
            # a rank whose share of a short last batch is empty (a plate cannot have size
            # 0) still takes part in the gradient average, with zero gradients, and in
            # any collective the model's guide joins (Model.empty_share)
            self.vae.empty_share()
            return sum((p * 0).sum() for p in self.parameters() if p.requires_grad)
        model, guide = _scaled(self.vae.model, weight), _scaled(self.vae.guide, weight)
        with self._context():
            return self.loss_fn.differentiable_loss(model, guide, *batch)


def _scaled(fn, weight: float):
    return fn if weight == 1.0 else scale_latents(fn, weight)


def _data_parallel(objective: Objective) -> nn.Module:
    """``objective`` wrapped in DDP on its device (one GPU per rank, or the CPU).

    Buffers are not broadcast before each forward pass: the models keep constants in
    them (the prior's parameters), which start equal on every rank. Gradients live in
    DDP's communication buckets (no copy per step).
    """
    device = next(objective.parameters()).device
    ddp = nn.parallel.DistributedDataParallel
    # torch 2.14 renamed the switch; older versions know only the first name
    no_sync = (
        {"forward_sync_buffers": False}
        if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
        else {"broadcast_buffers": False}
    )
    return ddp(
        objective,
        device_ids=[device.index] if device.type == "cuda" else None,
        gradient_as_bucket_view=True,
        **no_sync,
    )


def adam_options(parameters) -> dict[str, Any]:
    """Keyword arguments for :class:`torch.optim.Adam` over ``parameters``: ``fused=True``
    where torch has a fused kernel for them (floating-point tensors on the CPU or a CUDA
    device), else none.

    The fused kernel updates each tensor in one pass; the default implementation loops
    over the tensors in Python with several passes each. For the 784-400-20 VAE on one
    CPU thread the optimizer call alone takes 0.7 instead of 2.1 ms, and a whole step
    1.9 ms less (``docs/performance.md``). The update is the same formula; its rounding
    can differ in the last bit. Before torch 2.4 only CUDA tensors have the kernel.
    """
    params = list(parameters)
    devices = {p.device.type for p in params}
    if not params or not all(p.is_floating_point() for p in params):
        return {}
    if devices <= {"cuda"} or (devices <= {"cpu", "cuda"} and _FUSED_ADAM_ON_CPU):
        return {"fused": True}
    return {}


#: torch has a fused Adam for CPU tensors from 2.4 on (for CUDA tensors from 2.0)
_FUSED_ADAM_ON_CPU = torch.torch_version.TorchVersion(torch.__version__) >= "2.4"


class Engine(NamedTuple):
    """A training step and its optimizer state.

    :ivar step: ``step(batch, kl_weight) -> loss``: one gradient step on a tuple of
        tensors; returns the (KL-weighted) negative objective summed over the batch,
        as a 0-dim tensor.
    :ivar optimizer_state: ``() -> dict``: optimizer state keyed so that
        :func:`make_engine` can restore it into a fresh instance of the model.
    :ivar set_lr: ``set_lr(lr)``: Adam's step size from the next step on.
    """

    step: Callable[[tuple[torch.Tensor, ...], float], torch.Tensor]
    optimizer_state: Callable[[], dict[str, Any]]
    set_lr: Callable[[float], None]


def make_engine(
    vae,
    *,
    engine: str = "fast",
    objective: str = "elbo",
    num_particles: int = 1,
    lr: float = 1e-3,
    optimizer_state: dict[str, Any] | None = None,
    example_batch: tuple[torch.Tensor, ...] | None = None,
) -> Engine:
    """Build the training step for ``vae``.

    :param vae: module with ``model`` and ``guide`` methods taking the batch tensors.
    :param str engine: ``"fast"`` or ``"svi"`` (see the module docstring).
    :param str objective: see :func:`make_objective`.
    :param int num_particles: samples of z per data point per step.
    :param float lr: Adam step size.
    :param dict optimizer_state: from an earlier :attr:`Engine.optimizer_state`.
    :param example_batch: needed with ``engine="svi"`` and ``optimizer_state``: one
        pass of guide and model registers every parameter before its state is set.
        That pass draws random numbers: restore RNG state afterwards if it matters.
    :raises UsageError: unknown engine or objective, or an optimizer state written
        by the other engine.
    """
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}; valid names: {', '.join(ENGINES)}")
    loss_fn = make_objective(objective, num_particles, vae.max_plate_nesting)
    # the fast engine's torch optimizer holds the parameters: no param-store lookups
    objective_module: nn.Module = Objective(vae, loss_fn, register=engine != "fast")
    ranks = distributed.world_size()
    if distributed.active():
        objective_module = _data_parallel(objective_module)

    if engine == "fast":
        optimizer = torch.optim.Adam(vae.parameters(), lr=lr, **adam_options(vae.parameters()))
        if optimizer_state is not None:
            _check_state_kind(optimizer_state, "fast", "state" in optimizer_state)
            optimizer.load_state_dict(optimizer_state)

        def step(batch, weight):
            optimizer.zero_grad(set_to_none=True)
            loss = objective_module(batch, weight)
            (loss * ranks if ranks > 1 else loss).backward()
            optimizer.step()
            return loss.detach()

        def set_lr(lr: float) -> None:
            for group in optimizer.param_groups:
                group["lr"] = lr

        return Engine(step, optimizer.state_dict, set_lr)

    # engine == "svi": pyro.optim keys its per-parameter optimizers by param-store
    # name, which embeds the instance's name; checkpoints key them by state_dict key.
    optim = pyro.optim.Adam({"lr": lr, **adam_options(vae.parameters())})
    key_of = {id(p): k for k, p in vae.named_parameters()}
    if optimizer_state is not None:
        _check_state_kind(optimizer_state, "svi", "state" not in optimizer_state)
        if example_batch is None:
            raise ValueError("restoring an svi optimizer state needs example_batch")
        with torch.no_grad(), pyro.poutine.block():  # registers every parameter
            probe = tuple(t[:1] for t in example_batch)
            guide_trace = pyro.poutine.trace(vae.guide).get_trace(*probe)
            pyro.poutine.replay(vae.model, trace=guide_trace)(*probe)
        store = pyro.get_param_store()
        by_key = dict(vae.named_parameters())
        optim.set_state({store.param_name(by_key[k]): s for k, s in optimizer_state.items()})
    current: dict[str, Any] = {"weight": None, "svi": None}

    def svi_step(batch, weight):
        if weight != current["weight"]:  # constant after warm-up
            model, guide = _scaled(vae.model, weight), _scaled(vae.guide, weight)
            current.update(weight=weight, svi=SVI(model, guide, optim, loss_fn))
        return torch.tensor(current["svi"].step(*batch))

    def data_parallel_svi_step(batch, weight):
        # SVI.step's work, with the loss computed through DDP: backward, then one
        # pyro.optim update of the parameters (pyro.module registers the modules'
        # own tensors in the param store) and their gradients cleared
        loss = objective_module(batch, weight)
        (loss * ranks).backward()
        params = [p for p in vae.parameters() if p.requires_grad]
        optim(params)
        for p in params:
            p.grad = None
        return loss.detach()

    def svi_state():
        return {
            key_of[id(p)]: o.state_dict() for p, o in optim.optim_objs.items() if id(p) in key_of
        }

    def svi_set_lr(lr: float) -> None:
        # pyro.optim makes one torch optimizer per parameter, from these arguments
        optim.pt_optim_args["lr"] = lr
        for torch_optim in optim.optim_objs.values():
            for group in torch_optim.param_groups:
                group["lr"] = lr

    return Engine(data_parallel_svi_step if ranks > 1 else svi_step, svi_state, svi_set_lr)


def _check_state_kind(state: dict, engine: str, ok: bool) -> None:
    if not ok:
        other = "svi" if engine == "fast" else "fast"
        raise UsageError(
            f"the checkpoint's optimizer state was written by the {other!r} engine; "
            f"resume with engine={other!r} (--engine {other})"
        )
