"""Data-parallel fits with torch.distributed, launched by ``torchrun`` (or ``talk3d fit --nproc N``).

torchrun starts one process per rank and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` reads them, joins
the process group (NCCL on GPUs, gloo on CPU) and picks the rank's device. Each rank then
takes its own slice of every step's frames, gradients are averaged by
:class:`~torch.nn.parallel.DistributedDataParallel`, and only rank 0 writes files. Without
those variables (a plain ``talk3d fit``) everything here is a no-op for a world of one.
"""

from __future__ import annotations

import datetime
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from talk3d.console import set_secondary
from talk3d.device import resolve_device
from talk3d.errors import UserError, describe_os_error

T = TypeVar("T")


@dataclass
class Dist:
    """This process's place in the fit: rank ``rank`` of ``world`` (one process: 0 of 1)."""

    rank: int = 0
    """Global rank."""
    world: int = 1
    """Number of processes."""
    local_rank: int = 0
    """Rank on this machine (its GPU index)."""

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes checkpoints, metrics, previews and logs."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def mean(self, values: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Mean of ``values`` over the ranks, computed on ``device`` (NCCL reduces CUDA tensors
        only); returned on the CPU (the tensor itself in a world of one)."""
        if not self.active:
            return values
        out = values.detach().to(device, dtype=torch.float32).clone()
        dist.all_reduce(out)
        return (out / self.world).cpu()

    def all_true(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` holds on every rank (all ranks take the same decision)."""
        if not self.active:
            return flag
        t = torch.tensor([0.0 if flag else 1.0], device=device)
        dist.all_reduce(t)
        return bool(t.item() == 0.0)

    def share(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (a decision rank 0 took, e.g. the output folder)."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def main_only(self, fn: Callable[[], T]) -> T:
        """``fn()`` on rank 0, its result on every rank. A user or file error there is raised on
        every rank (as a :class:`UserError`), so no rank waits for a collective that never comes."""
        if not self.active:
            return fn()
        result, error = None, None
        if self.main:
            try:
                result = fn()
            except UserError as exc:
                error = str(exc)
            except OSError as exc:
                error = describe_os_error(exc)
        error = self.share(error)
        if error is not None:
            raise UserError(error)
        return self.share(result)

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Copy rank 0's parameters and buffers of ``module`` to every rank."""
        if self.active:
            for t in [*module.parameters(), *module.buffers()]:
                dist.broadcast(t.data, src=0)

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``model`` in :class:`DistributedDataParallel` (the model itself in a world of one).

        ``find_unused_parameters``: the identity stage leaves the U-Net out of the graph, and
        the audio encoder is frozen after the lip pretraining.
        """
        if not self.active:
            return model
        # a performance note about grads that are views of a larger tensor (the token embeddings); not an error
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        ids = [device.index] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def from_environment() -> Dist:
    """The :class:`Dist` torchrun's environment describes (0 of 1 without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Dist()
    return Dist(rank=int(os.environ.get("RANK", "0")), world=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def local_processes(d: Dist) -> int:
    """Ranks of this fit running on this machine."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", str(d.world)) or 1)


def setup(device: str) -> tuple[Dist, torch.device]:
    """Join the process group torchrun set up; return this rank's :class:`Dist` and device.

    Raises:
        UserError: the process group cannot be formed (wrong rendezvous flags, a rank missing).
    """
    d = from_environment()
    if not d.active:
        return d, resolve_device(device)
    if not d.main:
        set_secondary(True)
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        try:
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                    timeout=datetime.timedelta(minutes=30))
        except (RuntimeError, ValueError) as exc:
            raise UserError(f"cannot join the distributed fit (rank {d.rank} of {d.world}): "
                            f"{str(exc).splitlines()[0]}; check torchrun's --nnodes/--rdzv-endpoint flags") from None
    return d, dev


def shutdown(d: Dist, clean: bool = True) -> None:
    """Leave the process group: at the end of a fit (``clean``) all ranks together, after a
    barrier, so none tears its connections down while another still uses them (that aborted a
    rank at exit: "terminate called without an active exception"); after an error at once."""
    if d.active and dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()
