"""Objectives and training steps: what one gradient step of :func:`pyro_vae.fit` does.

Two engines compute the same estimator and the same Adam updates:

- ``"svi"``: :class:`pyro.infer.SVI` with :class:`pyro.optim.Adam`, the textbook
  Pyro loop. ``pyro.optim`` keeps one torch optimizer per parameter tensor and
  looks parameters up in the param store every step, and ``SVI.step`` returns
  a Python float (a device sync per step on a GPU).
- ``"fast"`` (default): the objective's ``differentiable_loss`` (``Trace_ELBO``,
  ``TraceMeanField_ELBO``) with one :class:`torch.optim.Adam` over
  ``module.parameters()``; the loss stays on the device. ``RenyiELBO`` has no
  ``differentiable_loss``, so for ``"iwae"`` it calls ``loss_and_grads``, which
  returns a float. Adam acts element-wise, so the updates equal ``"svi"``'s.

The KL weight (beta, warm-up) multiplies the log-densities of every latent
sample site in both model and guide (:func:`scale_latents`), so for
``Trace_ELBO`` the objective is ``E_q[log P(x|z)] - beta * KL``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import pyro
import torch
from pyro.infer import SVI, RenyiELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.scale_messenger import ScaleMessenger

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
        return RenyiELBO(alpha=0.0, **kwargs)
    raise UsageError(f"unknown objective {name!r}; valid names: {', '.join(OBJECTIVES)}")


class Engine(NamedTuple):
    """A training step and its optimizer state.

    :ivar step: ``step(batch, kl_weight) -> loss``: one gradient step on a tuple of
        tensors; returns the (KL-weighted) negative objective summed over the batch,
        as a 0-dim tensor.
    :ivar optimizer_state: ``() -> dict``: optimizer state keyed so that
        :func:`make_engine` can restore it into a fresh instance of the model.
    """

    step: Callable[[tuple[torch.Tensor, ...], float], torch.Tensor]
    optimizer_state: Callable[[], dict[str, Any]]


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

    def scaled(fn, weight):
        return fn if weight == 1.0 else scale_latents(fn, weight)

    if engine == "fast":
        optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
        if optimizer_state is not None:
            _check_state_kind(optimizer_state, "fast", "state" in optimizer_state)
            optimizer.load_state_dict(optimizer_state)
        differentiable = hasattr(loss_fn, "differentiable_loss")

        def step(batch, weight):
            model, guide = scaled(vae.model, weight), scaled(vae.guide, weight)
            optimizer.zero_grad(set_to_none=True)
            if differentiable:
                loss = loss_fn.differentiable_loss(model, guide, *batch)
                loss.backward()
                loss = loss.detach()
            else:  # RenyiELBO: loss_and_grads only, which returns a float
                loss = torch.tensor(loss_fn.loss_and_grads(model, guide, *batch))
            optimizer.step()
            return loss

        return Engine(step, optimizer.state_dict)

    # engine == "svi": pyro.optim keys its per-parameter optimizers by param-store
    # name, which embeds the instance's name; checkpoints key them by state_dict key.
    optim = pyro.optim.Adam({"lr": lr})
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
            model, guide = scaled(vae.model, weight), scaled(vae.guide, weight)
            current.update(weight=weight, svi=SVI(model, guide, optim, loss_fn))
        return torch.tensor(current["svi"].step(*batch))

    def svi_state():
        return {
            key_of[id(p)]: o.state_dict() for p, o in optim.optim_objs.items() if id(p) in key_of
        }

    return Engine(svi_step, svi_state)


def _check_state_kind(state: dict, engine: str, ok: bool) -> None:
    if not ok:
        other = "svi" if engine == "fast" else "fast"
        raise UsageError(
            f"the checkpoint's optimizer state was written by the {other!r} engine; "
            f"resume with engine={other!r} (--engine {other})"
        )
