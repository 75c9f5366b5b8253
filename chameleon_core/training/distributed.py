"""Process-group setup: ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``) or one process.

One process per GPU. The backend is NCCL on CUDA and gloo on CPU. A single process (no torchrun) still gets a
one-member gloo/NCCL group over a temporary file store, so FSDP2 and DCP run the same code at world size 1.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


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


def init_distributed(device: str = "auto") -> Dist:
    """Join the torchrun process group (or make a one-process one) and return this process's :class:`Dist`."""
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", rank))
    dev = _pick_device(device, local)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if "MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ:
            dist.init_process_group(backend, rank=rank, world_size=world, device_id=dev if dev.type == "cuda" else None)
        elif world == 1:
            fd, path = tempfile.mkstemp(prefix="chameleon_pg_")
            os.close(fd)
            os.unlink(path)
            dist.init_process_group(backend, init_method=f"file://{path}", rank=0, world_size=1)
        else:
            raise RuntimeError(
                f"WORLD_SIZE={world} but MASTER_ADDR/MASTER_PORT are not set; start with "
                "torchrun --nproc_per_node N -m chameleon_core.training ..."
            )
    info = Dist(dist.get_rank(), dist.get_world_size(), local, dev)
    logger.debug("process %d/%d on %s", info.rank, info.world_size, info.device)
    return info


def shutdown() -> None:
    if dist.is_initialized():
        dist.barrier()
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
