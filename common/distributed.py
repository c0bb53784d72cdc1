"""Multi-process training and testing: torchrun detection, process groups, episode sharding, rank-0 writes.

Started by ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment) the scripts run
DistributedDataParallel: gloo on the CPU, NCCL on GPUs (one per local rank). Otherwise a single process runs,
wrapping the model in ``nn.DataParallel`` when more than one GPU is visible (as released).

Sharding (:class:`EpisodeSampler`): training shuffles the episode indices with a per-epoch seed shared by all
ranks, pads them to a multiple of the world size (as ``DistributedSampler`` does; every rank must run the same
number of steps) and deals them out round-robin. Evaluation deals the indices out without padding, so every
episode is scored exactly once and the metrics summed over ranks equal a single-process run's.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from common.errors import FlagError, UserInputError


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` (``local_rank`` on its machine)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    distributed: bool = False

    @property
    def is_main(self) -> bool:
        """Whether this process writes logs, TensorBoard events and checkpoints."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Whether the environment of a torchrun (or any ``env://``) launch is present."""
    return all(key in os.environ for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def current_rank() -> int:
    """This process's rank from the launch environment (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", 0)) if launched_by_torchrun() else 0


def is_peer_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective failing because another rank exited (gloo: "Connection closed by
    peer"; NCCL: a ``DistError``), in a multi-process launch."""
    if not launched_by_torchrun() or int(os.environ.get("WORLD_SIZE", 1)) < 2:
        return False
    dist_error = getattr(dist, "DistError", None)
    if dist_error is not None and isinstance(exc, dist_error):
        return True
    return isinstance(exc, RuntimeError) and any(
        marker in str(exc) for marker in ("Connection closed by peer", "Connection reset by peer", "Broken pipe"))


def check_on_main(check: Callable[[], None]) -> None:
    """Run ``check`` on rank 0 only and raise its :class:`UserInputError` on every rank.

    For decisions about shared state (the run folder), so that no rank goes on into a collective while
    rank 0 stops: all ranks stop together, and the message is printed once (by rank 0).
    """
    error: Optional[UserInputError] = None
    if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:
        try:
            check()
        except UserInputError as exc:
            error = exc
    error = broadcast_object(error)  # type: ignore[assignment]
    if error is not None:
        error.raised_on_every_rank = True  # type: ignore[attr-defined]
        raise error


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group when started by torchrun; returns the rank info and this rank's device.

    Args:
        device: the resolved ``--device``; under torchrun a CUDA device becomes ``cuda:LOCAL_RANK``.
    """
    if not launched_by_torchrun():
        return DistInfo(), device
    rank, world, local = (int(os.environ[key]) for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return DistInfo(rank=rank, world_size=world, local_rank=local, distributed=world > 1), device


def cleanup() -> None:
    """Leave the process group (no-op when none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside ``nn.DataParallel`` / ``DistributedDataParallel`` (or the model itself)."""
    return model.module if hasattr(model, "module") and isinstance(model.module, torch.nn.Module) else model


def all_reduce_flag(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value)
    return bool(value.item() > 0)


def broadcast_object(obj: object, src: int = 0) -> object:
    """``obj`` of rank ``src`` on every rank (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_gather_objects(obj: object) -> list[object]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    gathered: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


class EpisodeSampler(Sampler[int]):
    """Episode indices of one rank; a single process (world 1) gets the plain (shuffled) order.

    Args:
        length: episodes in the dataset.
        rank, world_size: this rank and the number of ranks.
        shuffle: draw a new permutation per epoch (training), seeded by ``seed + epoch`` on every rank alike.
        pad: repeat leading indices so every rank gets ``ceil(length / world_size)`` (training); without it
            ranks get ``length // world_size`` or one more, and every index appears once (evaluation).
        seed: base seed of the permutation.
    """

    def __init__(self, length: int, *, rank: int = 0, world_size: int = 1, shuffle: bool = False,
                 pad: bool = False, seed: int = 0) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        self.length, self.rank, self.world_size = length, rank, world_size
        self.shuffle, self.pad, self.seed = shuffle, pad, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` (call before iterating, as with ``DistributedSampler``)."""
        self.epoch = epoch

    def indices(self) -> list[int]:
        """This rank's indices for the current epoch."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            order = list(range(self.length))
        if self.pad and self.world_size > 1 and order:
            total = -(-self.length // self.world_size) * self.world_size
            order = (order * (-(-total // len(order))))[:total]
        return order[self.rank::self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        if self.pad and self.world_size > 1:
            return -(-self.length // self.world_size)
        return len(range(self.rank, self.length, self.world_size))


def local_batch_size(global_bsz: int, info: DistInfo, flag: str = "--bsz") -> int:
    """The per-rank batch of a global ``--bsz``; an error when ranks cannot share it evenly."""
    if global_bsz % info.world_size:
        raise FlagError(f"{flag} {global_bsz} is not divisible by the number of ranks ({info.world_size}); "
                        f"use a multiple of {info.world_size}")
    return global_bsz // info.world_size


def seed_for(base: int, epoch: int, rank: Optional[int] = None) -> int:
    """A 31-bit seed of ``(base, epoch[, rank])``, the same on every rank when ``rank`` is None."""
    return (base * 1_000_003 + epoch * 9_176 + (rank or 0) * 7_919) % (2**31 - 1)
