"""Several processes on PyTorch's own engine: ``torchrun`` and ``torch.distributed``.

pyro_vae runs in one process unless it is launched by ``torchrun``, which starts one
process per rank and describes the job in environment variables (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). :func:`setup` joins
the process group they describe: ``gloo`` on the CPU, ``nccl`` on CUDA with each rank
on ``cuda:LOCAL_RANK``. Inside an initialized group of more than one process:

- :func:`pyro_vae.fit` trains data-parallel: every rank takes its share of each global
  batch and :class:`torch.nn.parallel.DistributedDataParallel` averages the gradients;
- :func:`pyro_vae.evaluate.evaluate_dataset`, :func:`~pyro_vae.evaluate.mean_elbo` and
  :func:`pyro_vae.gaps.decompose_gap` split the data points across ranks and give
  every rank the gathered result, in the original order.

So every rank must call them, with the same arguments. Outside a group (or with one
process) every function here is a no-op and the library behaves as in one process.

Random streams that must not depend on the number of processes (each data point's
importance samples) come from :func:`stream_seed`, a hash of the run's seed, a purpose
and the point's index.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from pyro_vae.devices import resolve_device
from pyro_vae.errors import UsageError

#: seconds a collective waits for the other ranks before it fails. torchrun itself
#: stops every rank as soon as one exits; this bounds the wait of processes started
#: by other launchers. ``PYRO_VAE_TIMEOUT`` overrides it.
DEFAULT_TIMEOUT_S = 300
#: what torchrun sets for each process
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class SharedError(UsageError):
    """An error that every rank meets alike, so only rank 0 reports it: bad launcher
    settings, or a refusal that rank 0 decided for the group (:func:`agree`)."""


class LaunchError(SharedError):
    """Bad launcher settings: the same on every rank, so only rank 0 reports them."""


def launched() -> bool:
    """Whether this process was started by ``torchrun`` with more than one process."""
    return _env_int("WORLD_SIZE", 1) > 1


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise LaunchError(f"the environment variable {name}={text!r} is not an integer") from None


#: the launch variables that hold counts or ranks, with the least value of each
COUNT_VARIABLES = {"RANK": 0, "LOCAL_RANK": 0, "WORLD_SIZE": 1, "LOCAL_WORLD_SIZE": 1}


def check_environment() -> None:
    """Refuse launch variables that no process can run with, before anything else reads
    them (every command checks them, also where it runs alone).

    :raises LaunchError: for a variable that is set but is no integer.
    :raises UsageError: for a rank or size below its least value, or a rank that is not
        below its size (this process's own setting, so every rank reports it).
    """
    values = {name: _env_int(name, least) for name, least in COUNT_VARIABLES.items()}
    for name, least in COUNT_VARIABLES.items():
        if values[name] < least:
            raise UsageError(
                f"the environment variable {name}={values[name]} must be at least {least}; "
                "start several processes with torchrun, which sets it, or unset it"
            )
    for rank_name, size_name in (("RANK", "WORLD_SIZE"), ("LOCAL_RANK", "LOCAL_WORLD_SIZE")):
        if {rank_name, size_name} <= set(os.environ) and values[rank_name] >= values[size_name]:
            raise UsageError(
                f"the environment variable {rank_name}={values[rank_name]} is not below "
                f"{size_name}={values[size_name]}; ranks count from 0. Start several "
                "processes with torchrun, which sets both, or unset them"
            )


def launch_rank() -> int:
    """``RANK`` as the launcher set it, for messages; 0 where it is unset or no
    integer (:func:`check_environment` refuses that)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def active() -> bool:
    """Whether a process group of more than one process is initialized."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank in the group, 0 outside one."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """The number of processes in the group, 1 outside one."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this process writes files and prints: rank 0, or the only process."""
    return rank() == 0


def setup(device: str | torch.device = "cpu") -> torch.device:
    """Join the process group that ``torchrun`` describes, and return this rank's device.

    Without ``torchrun`` (or with one process) it only parses ``device``. Under
    ``torchrun``, ``--device cpu`` uses ``gloo`` and ``--device cuda`` uses ``nccl``
    with rank ``r`` of each node on ``cuda:LOCAL_RANK``.

    :param device: ``"cpu"``, ``"cuda"`` (or ``"cuda:N"`` outside torchrun).
    :raises LaunchError: for settings no rank can run with (CUDA without GPUs, more
        processes per node than GPUs, a device index under torchrun, variables
        missing).
    """
    if not launched():
        return resolve_device(device)
    missing = [v for v in LAUNCH_VARIABLES if v not in os.environ]
    if missing:
        raise LaunchError(
            f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {', '.join(missing)} are not set; "
            "start several processes with torchrun --nproc-per-node N -m pyro_vae ..."
        )
    size, local_rank = _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0)
    # torchrun sets it; every rank of a node compares it, so all refuse alike
    per_node = _env_int("LOCAL_WORLD_SIZE", local_rank + 1)
    kind = torch.device(device).type if _parses(device) else str(device)
    if kind == "cuda":
        if torch.device(device).index is not None:
            raise LaunchError(
                f"{{device}} {device}: under torchrun each rank uses cuda:LOCAL_RANK; "
                "pass {device} cuda",
                settings=("device",),
            )
        if not torch.cuda.is_available():
            raise LaunchError(
                "{device} cuda: CUDA is not available on this machine, so the nccl backend "
                "cannot start; use {device} cpu (gloo)",
                settings=("device",),
            )
        if max(per_node, local_rank + 1) > torch.cuda.device_count():
            raise LaunchError(
                f"torchrun started more processes on this node than it has GPUs "
                f"({torch.cuda.device_count()}); pass --nproc-per-node "
                f"{torch.cuda.device_count()} or fewer"
            )
        torch.cuda.set_device(local_rank)
        here, backend = torch.device("cuda", local_rank), "nccl"
    else:
        here, backend = resolve_device(device), "gloo"
    if not dist.is_initialized():
        timeout = _env_int("PYRO_VAE_TIMEOUT", DEFAULT_TIMEOUT_S)
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
    if dist.get_world_size() != size:
        raise LaunchError(f"the process group has {dist.get_world_size()} ranks, not {size}")
    return here


def teardown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_batch(batch_size: int) -> None:
    """Refuse a global batch that the processes cannot share equally.

    :raises LaunchError: if the batch is smaller than the number of processes or not a
        multiple of it.
    """
    size = world_size() if active() else _env_int("WORLD_SIZE", 1)
    if size <= 1:
        return
    if batch_size < size:
        raise LaunchError(
            f"{{batch_size}} {batch_size} is the global batch, smaller than the {size} "
            f"processes; use {{batch_size}} {size} or more, or fewer processes",
            settings=("batch_size",),
        )
    if batch_size % size:
        lower, upper = batch_size - batch_size % size, batch_size - batch_size % size + size
        raise LaunchError(
            f"{{batch_size}} {batch_size} (the global batch) does not divide among {size} "
            f"processes; use {{batch_size}} {lower} or {upper}",
            settings=("batch_size",),
        )


def shard(n: int) -> range:
    """This rank's contiguous share of ``range(n)``; shares differ in size by at most 1
    and follow each other in rank order."""
    size, me = world_size(), rank()
    base, extra = divmod(n, size)
    start = me * base + min(me, extra)
    return range(start, start + base + (me < extra))


@contextmanager
def node_leader_first():
    """Run the block on local rank 0 of every node first, then on the other ranks:
    for a data set that the first loader may download into a shared folder. Every
    rank of the group must enter it."""
    if not active():
        yield
        return
    leader = _env_int("LOCAL_RANK", 0) == 0
    if not leader:
        dist.barrier()
    try:
        yield
    finally:
        if leader:
            dist.barrier()


def rng_devices(*tensors: torch.Tensor) -> list[int]:
    """The CUDA devices whose generators ``torch.manual_seed`` touches and
    :func:`torch.random.fork_rng` must restore: all of them once CUDA is in use."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return list(range(torch.cuda.device_count()))
    return [t.device.index or 0 for t in tensors if t.device.type == "cuda"]


def barrier() -> None:
    """Wait until every rank gets here (nothing outside a group)."""
    if active():
        dist.barrier()


def all_sum(value: torch.Tensor) -> torch.Tensor:
    """The sum of ``value`` over ranks (``value`` itself outside a group)."""
    if not active():
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def all_gather(parts: Any) -> list[Any]:
    """Every rank's ``parts`` (any picklable object), in rank order, on every rank."""
    if not active():
        return [parts]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, parts)
    return gathered


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` in rank order on rank 0, ``None`` elsewhere."""
    if not active():
        return [obj]
    gathered: list[Any] | None = [None] * world_size() if is_main() else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree(decide: Callable[[], None]) -> None:
    """Call ``decide`` on rank 0 and raise its refusal on every rank.

    For a check only one process may make (it takes a lock, or looks at files while
    holding it): the other ranks wait for its verdict instead of being stopped mid-way.

    :param decide: raises :class:`~pyro_vae.errors.UsageError` to refuse.
    :raises SharedError: on every rank, with the message of ``decide``'s refusal.
    """
    verdict = None
    if is_main():
        try:
            decide()
        except UsageError as err:
            if not active():
                raise
            verdict = (err.template, err.settings)
    verdict = broadcast(verdict)
    if verdict is not None:
        raise SharedError(verdict[0], settings=verdict[1])


def stream_seed(seed: int, purpose: str, index: int) -> int:
    """A seed for one random stream, the same in every process: a hash of the run's
    ``seed``, a ``purpose`` (``"guide"``, ``"prior"``, ``"rank"`` ...) and an ``index``
    (a data point, a rank).

    Streams of different purposes or indices are statistically independent
    (:class:`numpy.random.SeedSequence` mixes the three).
    """
    words = [int(seed) % 2**64, *purpose.encode(), int(index)]
    state = np.random.SeedSequence(words).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1  # 63 bits: a valid torch seed


def _parses(device) -> bool:
    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        return False
    return True
