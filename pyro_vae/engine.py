"""Training steps: what one gradient step of :func:`pyro_vae.fit` does.

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
  no ``differentiable_loss``; :class:`~pyro_vae.objectives.DifferentiableRenyiELBO` adds one.

Inside a process group (:mod:`pyro_vae.distributed`) both engines run the objective
as the forward pass of an :class:`Objective` module wrapped in
:class:`~torch.nn.parallel.DistributedDataParallel`: DDP averages gradients only of
parameters reached by a forward call through the module it wraps, and Pyro would
otherwise call the model's ``model`` and ``guide`` methods behind its back. Each rank
scores its share of the global batch, and its loss is multiplied by the number of
ranks before ``backward``, so that DDP's average is the gradient of the whole batch's
sum, exactly as in one process.

What the step optimizes (the objectives, the KL weight) is in :mod:`pyro_vae.objectives`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, NamedTuple

import pyro
import torch
from pyro.infer import SVI
from torch import nn

from pyro_vae import distributed
from pyro_vae.errors import UsageError
from pyro_vae.objectives import make_objective, scale_latents

#: engine names of :func:`make_engine`
ENGINES = ("fast", "svi")


class Objective(nn.Module):
    """One step's loss as a module, so that DDP can wrap it.

    ``forward(batch, weight)`` runs the Pyro objective's ``differentiable_loss`` on the
    model's ``model`` and ``guide`` (latent sites scaled by the KL ``weight``) and
    returns the negative objective summed over the batch. The model is a submodule,
    so DDP sees its parameters.

    :param model: a :class:`~pyro_vae.models.base.Model`.
    :param loss_fn: a Pyro ELBO with ``differentiable_loss``
        (:func:`~pyro_vae.objectives.make_objective`).
    :param bool register: run ``model`` and ``guide`` registering their networks in
        Pyro's param store (``pyro.optim`` finds parameters there); ``False`` for an
        optimizer that holds ``model.parameters()`` itself
        (:meth:`~pyro_vae.models.base.Model.outside_param_store`).
    """

    def __init__(self, model: nn.Module, loss_fn, register: bool = True) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        bypass = getattr(model, "outside_param_store", None)
        self._context = bypass if (bypass is not None and not register) else nullcontext

    def forward(self, batch: tuple[torch.Tensor, ...], weight: float) -> torch.Tensor:
        if batch[0].shape[0] == 0:
            # a rank whose share of a short last batch is empty (a plate cannot have size
            # 0) still takes part in the gradient average, with zero gradients, and in
            # any collective the model's guide joins (Model.empty_share)
            self.model.empty_share()
            return sum((p * 0).sum() for p in self.parameters() if p.requires_grad)
        model, guide = _scaled(self.model.model, weight), _scaled(self.model.guide, weight)
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
    model,
    *,
    engine: str = "fast",
    objective: str = "elbo",
    num_particles: int = 1,
    lr: float = 1e-3,
    optimizer_state: dict[str, Any] | None = None,
    example_batch: tuple[torch.Tensor, ...] | None = None,
) -> Engine:
    """Build the training step for ``model``.

    :param model: module with ``model`` and ``guide`` methods taking the batch tensors.
    :param str engine: ``"fast"`` or ``"svi"`` (see the module docstring).
    :param str objective: see :func:`~pyro_vae.objectives.make_objective`.
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
        raise UsageError(
            f"unknown {{engine}} {engine!r}; valid names: {', '.join(ENGINES)}",
            settings=("engine",),
        )
    enumerate = bool(getattr(model, "enumerated_sites", ()))
    loss_fn = make_objective(objective, num_particles, model.max_plate_nesting, enumerate)
    # the fast engine's torch optimizer holds the parameters: no param-store lookups
    objective_module: nn.Module = Objective(model, loss_fn, register=engine != "fast")
    ranks = distributed.world_size()
    if distributed.active():
        objective_module = _data_parallel(objective_module)

    if engine == "fast":
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, **adam_options(model.parameters()))
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
    optim = pyro.optim.Adam({"lr": lr, **adam_options(model.parameters())})
    key_of = {id(p): k for k, p in model.named_parameters()}
    if optimizer_state is not None:
        _check_state_kind(optimizer_state, "svi", "state" not in optimizer_state)
        if example_batch is None:
            raise ValueError("restoring an svi optimizer state needs example_batch")
        with torch.no_grad(), pyro.poutine.block():  # registers every parameter
            probe = tuple(t[:1] for t in example_batch)
            guide_trace = pyro.poutine.trace(model.guide).get_trace(*probe)
            pyro.poutine.replay(model.model, trace=guide_trace)(*probe)
        store = pyro.get_param_store()
        by_key = dict(model.named_parameters())
        optim.set_state({store.param_name(by_key[k]): s for k, s in optimizer_state.items()})
    current: dict[str, Any] = {"weight": None, "svi": None}

    def svi_step(batch, weight):
        if weight != current["weight"]:  # constant after warm-up
            scaled_model, scaled_guide = _scaled(model.model, weight), _scaled(model.guide, weight)
            current.update(weight=weight, svi=SVI(scaled_model, scaled_guide, optim, loss_fn))
        return torch.tensor(current["svi"].step(*batch))

    def data_parallel_svi_step(batch, weight):
        # SVI.step's work, with the loss computed through DDP: backward, then one
        # pyro.optim update of the parameters (pyro.module registers the modules'
        # own tensors in the param store) and their gradients cleared
        loss = objective_module(batch, weight)
        (loss * ranks).backward()
        params = [p for p in model.parameters() if p.requires_grad]
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
            f"resume with {{engine}} {other}",
            settings=("engine",),
        )
