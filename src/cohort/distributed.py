"""Data parallelism on PyTorch's own engines: torchrun's process group, DDP and FSDP2.

One process is the default and needs none of this (``World()`` with size 1 makes every operation
here a no-op). Under ``torchrun`` each rank trains on its share of every batch (whole groups: a
GRPO group or a DPO pair never spans ranks); everything that spans a batch is summed across ranks
so that N ranks compute the gradient one process would compute on the same global batch:

* the loss normalisers (token and sequence counts) are all-reduced before any micro-batch's loss;
* each rank's loss is scaled by the world size, because DDP and FSDP2 average gradients;
* DDP: each rank makes exactly one gradient-synchronising backward per optimizer step (the others
  run under ``no_sync``), so ranks with different numbers of micro-batches never wait on each
  other; a rank with nothing to train runs one zero-weighted backward.

FSDP2 (``torch.distributed.fsdp.fully_shard``) shards each decoder layer (and the rest of the model
as the root unit) of the policy, of PPO's value model and of the reference model. The step has two
phases with different rules:

* generation (the rollout, evaluation): the policy's full parameters are gathered once
  (:func:`gathered`), so ranks may decode different numbers of tokens with no collective inside
  the decode loop; they are freed (resharded) before anything else runs;
* every other forward (pi_old and reference log-probs, values, the update) runs as FSDP2 is meant
  to: each unit's parameters are all-gathered in its forward (and again in its backward) and freed
  after, gradients are reduce-scattered after every backward, the optimizer steps on shards. Each
  such forward is a collective, so every rank runs the same number of them: the count of
  micro-batches is all-reduced to the largest (:func:`even_count`) and a rank with fewer runs
  zero-weighted (or discarded) padding micro-batches.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import torch
import torch.distributed as dist

STRATEGIES = ("ddp", "fsdp2")


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a run (size 1: a single process)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    strategy: str = "ddp"

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run directory, prints and evaluates."""
        return self.rank == 0

    def share(self, count: int, what: str) -> slice:
        """This rank's contiguous share of ``count`` items (prompts, examples)."""
        if count % self.size:
            raise ValueError(f"{what}={count} must be divisible by the world size {self.size}, so every rank gets whole groups")
        per_rank = count // self.size
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)

    def sum(self, value: Any) -> Any:
        """The sum over ranks of a number or tensor (returned in the same kind)."""
        if not self.distributed:
            return value
        tensor = torch.as_tensor(value, dtype=torch.float64 if not isinstance(value, torch.Tensor) else None).clone()
        device = tensor.device
        tensor = tensor.to(self._device())
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor = tensor.to(device)
        if isinstance(value, torch.Tensor):
            return tensor
        return int(tensor) if isinstance(value, int) and not isinstance(value, bool) else float(tensor)

    def max(self, value: int) -> int:
        """The largest of every rank's ``value``."""
        return _max_over_ranks(value) if self.distributed else value

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (any picklable object), in rank order, on every rank."""
        if not self.distributed:
            return [value]
        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if not self.distributed:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def _device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")


def start_world(strategy: str = "ddp", backend: str = "auto", timeout_s: float = 1800.0) -> World:
    """The World torchrun describes in the environment (WORLD_SIZE, RANK, LOCAL_RANK); a process group
    is created when there is more than one rank. gloo on CPU, NCCL on GPU (``backend="auto"``)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(strategy=strategy)
    if strategy not in STRATEGIES:
        raise ValueError(f"distributed.strategy={strategy!r} is not allowed: expected one of {', '.join(STRATEGIES)}")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return World(rank=rank, size=size, local_rank=local_rank, strategy=strategy)


def stop_world(world: World, finished: bool = True) -> None:
    """Destroy the process group :func:`start_world` made (a no-op in one process).

    After a finished run every rank first waits for the others: a rank that tore its group down
    while another still used the store could abort that rank at exit (gloo's threads see the store
    vanish). After an error there is no barrier, since a failed rank's peers may never arrive."""
    if not (world.distributed and dist.is_initialized()):
        return
    if finished:
        dist.barrier()
    while _BEFORE_STOP:
        _BEFORE_STOP.pop()()
    if dist.is_initialized():  # a callback may have torn the group down already
        dist.destroy_process_group()


_BEFORE_STOP: list[Callable[[], None]] = []


def before_stop(callback: Callable[[], None]) -> None:
    """Have :func:`stop_world` call ``callback`` before it destroys the process group: for what
    joined the group and must leave first (a vLLM engine, whose shutdown destroys the group)."""
    if callback not in _BEFORE_STOP:
        _BEFORE_STOP.append(callback)


def leave_process(code: int) -> NoReturn:
    """End a torchrun rank after :func:`stop_world`, without the interpreter's finalization.

    DDP's and FSDP2's state keeps a reference to the process group from C++, so
    ``destroy_process_group`` unregisters gloo's group but leaves its worker and TCP-loop threads
    running (``pt_gloo_runloop``, ``gloo_tcp_loop``). The interpreter's finalization and the C++
    static destructors then ran with those threads alive, which now and then aborted a rank at exit
    ("terminate called without an active exception") after a finished run. So a finished rank does
    what a normal exit does up to that point (waits for its non-daemon threads, runs the ``atexit``
    handlers: reward pools, trackers, Ray; flushes its output) and then ends with ``os._exit``."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


# --- wrapping models --------------------------------------------------------------------------------


def fsdp_modules(module: torch.nn.Module) -> list[torch.nn.Module]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in module.modules() if isinstance(m, FSDPModule)]


def _decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated transformer blocks: each becomes one FSDP2 unit."""
    layers = getattr(getattr(model, getattr(model, "base_model_prefix", "model"), None), "layers", None)
    if layers is None:
        raise ValueError(f"FSDP2: cannot find the decoder layers of {type(model).__name__} (expected <model>.layers)")
    return list(layers)


@dataclass(frozen=True)
class Sharding:
    """FSDP2's memory levers (``distributed.*``); ignored by DDP and in one process."""

    mixed_precision: str = "none"  # "bf16": gathered parameters and forwards in bf16, gradients reduced in fp32
    cpu_offload: bool = False  # shards, gradients and optimizer state in host memory (CUDA only)

    def check(self, device: str) -> None:
        """Raise (one line) for a lever this device type cannot pull; preflight calls it before any weights load."""
        if self.cpu_offload and device != "cuda":
            raise ValueError(f"distributed.cpu_offload=true needs CUDA devices (model.device resolves to {device}): "
                             "on CPU the shards are in host memory already; remove the key")

    def options(self, device: str) -> dict[str, Any]:
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy

        self.check(device)
        options: dict[str, Any] = {}
        if self.mixed_precision == "bf16":
            options["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if self.cpu_offload:
            options["offload_policy"] = CPUOffloadPolicy()
        return options


def wrap(world: World, module: torch.nn.Module, sharding: Sharding = Sharding()) -> torch.nn.Module:
    """The module the training forward goes through: itself (one process), DDP, or FSDP2-sharded in place."""
    if not world.distributed:
        return module
    if world.strategy == "ddp":
        device_ids = [world.local_rank] if next(module.parameters()).is_cuda else None
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=device_ids)
    return shard(world, module, sharding)


def shard(world: World, module: torch.nn.Module, sharding: Sharding = Sharding()) -> torch.nn.Module:
    """FSDP2 in place: one unit per decoder layer, the rest (embeddings, final norm, head) in the root unit."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    device = "cuda" if next(module.parameters()).is_cuda else "cpu"
    mesh = init_device_mesh(device, (world.size,))
    options = sharding.options(device)
    for layer in _decoder_layers(module):
        fully_shard(layer, mesh=mesh, **options)
    fully_shard(module, mesh=mesh, **options)
    return module


def is_sharded(module: torch.nn.Module) -> bool:
    return bool(fsdp_modules(module))


def even_count(count: int, module: torch.nn.Module) -> int:
    """The number of forwards every rank runs through ``module``: ``count`` itself unless the module is
    FSDP2-sharded, then the largest ``count`` of any rank (each sharded forward is a collective)."""
    return _max_over_ranks(count) if is_sharded(module) and dist.is_initialized() else count


def _max_over_ranks(value: int) -> int:
    """The largest of every rank's ``value`` (a collective of the default process group)."""
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor)


@contextlib.contextmanager
def gathered(modules: list[torch.nn.Module]) -> Iterator[None]:
    """FSDP2: gather the full parameters once and keep them for the enclosed forwards (generation: no
    collective inside the decode loop); on exit they are freed and only the shards remain. A no-op
    for unsharded modules."""
    units = [(unit, unit is module) for module in modules for unit in fsdp_modules(module)]
    for unit, _ in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.set_reshard_after_backward(False, recurse=False)
        unit.unshard()
    try:
        yield
    finally:
        for unit, root in units:
            unit.reshard()
            # FSDP2's defaults again: a root unit keeps its parameters from its forward to its backward
            # (the output head runs after the forward, cohort.models.scoring), the others reshard
            unit.set_reshard_after_forward(not root, recurse=False)
            unit.set_reshard_after_backward(True, recurse=False)


@contextlib.contextmanager
def released(modules: list[torch.nn.Module]) -> Iterator[None]:
    """FSDP2: on exit free whatever the enclosed forwards left gathered (a root unit keeps its
    parameters after a forward that no backward follows). A no-op for unsharded modules."""
    try:
        yield
    finally:
        for module in modules:
            for unit in fsdp_modules(module):
                unit.reshard()


@contextlib.contextmanager
def gradient_sync(forward_modules: list[torch.nn.Module], enabled: bool) -> Iterator[None]:
    """Let (or stop) the enclosed backward synchronise gradients across ranks (DDP no_sync, FSDP2
    set_requires_gradient_sync); one process: nothing to do."""
    with contextlib.ExitStack() as stack:
        for module in forward_modules:
            if isinstance(module, torch.nn.parallel.DistributedDataParallel) and not enabled:
                stack.enter_context(module.no_sync())
            for unit in fsdp_modules(module):
                unit.set_requires_gradient_sync(enabled)
        yield


# --- whole state dicts for checkpoints (torch.distributed.checkpoint's state-dict API) ---------------


def _state_options(cpu_offload: bool):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=cpu_offload)


def load_full_model_state(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a whole state dict (every rank has it) into ``module``, sharded or not."""
    if not is_sharded(module):
        module.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(module, state, options=_state_options(cpu_offload=False))


def full_model_state(world: World, module: torch.nn.Module, *, everywhere: bool = False) -> dict[str, torch.Tensor] | None:
    """The whole (unsharded) state dict of ``module`` on rank 0, or on every rank with ``everywhere``;
    None on the other ranks. Collective under FSDP2: every rank must call it."""
    if world.distributed and world.strategy == "fsdp2":
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        state = get_model_state_dict(module, options=_state_options(cpu_offload=not everywhere))
        return state if (everywhere or world.is_main) else None
    if not (everywhere or world.is_main):
        return None
    return {name: tensor.detach().cpu().clone() for name, tensor in module.state_dict().items()}


def optimizer_state(world: World, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
    """The optimizer's whole state keyed by parameter names (the same form for one process, DDP and
    FSDP2, so a run resumes under another strategy or world size) on rank 0; None elsewhere."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    state = get_optimizer_state_dict(module, optimizer, options=_state_options(cpu_offload=True))
    return state if world.is_main else None


def load_optimizer_state(module: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load what :func:`optimizer_state` saved (every rank reads the whole state and keeps its shard)."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(module, optimizer, optim_state_dict=state, options=_state_options(cpu_offload=False))
