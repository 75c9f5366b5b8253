"""Process-group setup: ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``) or one process.

One process per GPU. The backend is NCCL on CUDA and gloo on CPU. A single process (no torchrun) still gets a
one-member gloo/NCCL group over a temporary file store, so FSDP2 and DCP run the same code at world size 1.

Bounded waits: the group is created with a timeout (``CHAMELEON_DIST_TIMEOUT`` seconds, default 600) that bounds
the rendezvous (every process must join within it) and every collective. With several processes the fault watchdog
(:mod:`.faults`) starts with the group, so a failing or vanished process ends the job in seconds rather than at that
timeout. Checkpoints get a gloo group of their own (:func:`checkpoint_group`): asynchronous DCP saves run their
collectives from a background thread, which must never share a group with the training step's collectives.
"""

from __future__ import annotations

import datetime
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .faults import TrainingError, start_watchdog, stop_watchdog

logger = logging.getLogger(__name__)

TIMEOUT_ENV = "CHAMELEON_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
"""Rendezvous and collective timeout. Long enough for rank 0 to read 5B weights while the others wait in the
broadcast, and for a synchronous DCP load; a failure is reported by the watchdog long before."""

_checkpoint_group: Any = None


@dataclass(frozen=True)
class Dist:
    """Where this process sits: rank, world size and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _pick_device(device: str, local_rank: int) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("run.device is 'cuda' but no CUDA device is available; use --set run.device=cpu")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if device != "cpu":
        raise ValueError(f"run.device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    return torch.device("cpu")


def dist_timeout() -> datetime.timedelta:
    """The rendezvous / collective timeout from ``CHAMELEON_DIST_TIMEOUT`` (seconds)."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return datetime.timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:
        raise TrainingError(f"{TIMEOUT_ENV}={raw!r} must be a number of seconds > 0 (default {DEFAULT_TIMEOUT_S:g}); "
                            "unset it or give e.g. 900")
    return datetime.timedelta(seconds=seconds)


def init_distributed(device: str = "auto") -> Dist:
    """Join the torchrun process group (or make a one-process one) and return this process's :class:`Dist`.

    Idempotent: a second call (``prepare`` then a stage in one process) returns the existing placement.
    """
    global _checkpoint_group
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", rank))
    dev = _pick_device(device, local)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        timeout = dist_timeout()
        if "MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ:
            try:
                dist.init_process_group(backend, rank=rank, world_size=world, timeout=timeout,
                                        device_id=dev if dev.type == "cuda" else None)
            except (RuntimeError, ValueError) as e:
                raise TrainingError(
                    f"process {rank} of {world} could not join the process group at "
                    f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} within {timeout.total_seconds():.0f} s "
                    f"({e}); start every process (every node) with the same rendezvous settings and a reachable "
                    f"MASTER_ADDR/--rdzv-endpoint, or raise {TIMEOUT_ENV} for slow starts"
                ) from None
        elif world == 1:
            fd, path = tempfile.mkstemp(prefix="chameleon_pg_")
            os.close(fd)
            os.unlink(path)
            dist.init_process_group(backend, init_method=f"file://{path}", rank=0, world_size=1, timeout=timeout)
        else:
            raise TrainingError(
                f"WORLD_SIZE={world} but MASTER_ADDR/MASTER_PORT are not set; start with "
                "torchrun --nproc_per_node N -m chameleon_core.training ..."
            )
        # Collective: every process creates it right here, in the same order.
        _checkpoint_group = dist.new_group(backend="gloo", timeout=timeout)
        if dist.get_world_size() > 1:
            start_watchdog(dist.distributed_c10d._get_default_store(), dist.get_rank(), dist.get_world_size())
    info = Dist(dist.get_rank(), dist.get_world_size(), local, dev)
    logger.debug("process %d/%d on %s", info.rank, info.world_size, info.device)
    return info


def checkpoint_group() -> Any:
    """The gloo group checkpoints use (created with the process group; None before)."""
    return _checkpoint_group


def shutdown(ok: bool = True) -> None:
    """Leave the process group. ``ok``: every process got here normally, so a last barrier is safe (it keeps rank 0,
    which may host the store, alive until the others are done). After an error no collective runs."""
    global _checkpoint_group
    if not dist.is_initialized():
        return
    stop_watchdog()
    if ok and dist.get_world_size() > 1:
        dist.barrier()
    _checkpoint_group = None
    dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def mean_across(value: float, device: torch.device) -> float:
    """Mean of a scalar over all processes (for logging)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def any_across(flag: bool, device: torch.device) -> bool:
    """True when any process passes True (e.g. a bad-data flag)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return bool(flag)
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def max_across(values: list[int], device: torch.device) -> list[int]:
    """Element-wise maximum of small integer flags over all processes (one collective)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [int(v) for v in values]
    t = torch.tensor(values, dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [int(v) for v in t.tolist()]
