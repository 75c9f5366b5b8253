"""Resumable training checkpoints.

One checkpoint is a folder ``<run>/checkpoints/step_NNNNNNN/``:

- ``dcp/`` -- model(s) and optimiser(s), sharded, written by every process with ``torch.distributed.checkpoint``
  (state dicts from :func:`~torch.distributed.checkpoint.state_dict.get_state_dict`, so a run can resume on a
  different number of processes);
- ``trainer.pt`` -- step, scheduler states, data position and anything else the stage passes (rank 0);
- ``rng/rank<R>.pt`` -- torch CPU/CUDA, python and numpy RNG states of each process.

``<run>/checkpoints/latest`` names the newest complete checkpoint; it is written last, after every process has
finished, so an interruption while saving leaves the previous checkpoint in charge. Everything is read back with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from .distributed import Dist, barrier

logger = logging.getLogger(__name__)

Parts = Mapping[str, "tuple[nn.Module, torch.optim.Optimizer | None]"]
"""Named (module, optimiser or None) pairs: e.g. ``{"generator": (g, opt_g), "critic": (c, opt_c), "ema": (e, None)}``."""


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _state(parts: Parts) -> dict[str, Any]:
    out = {}
    for name, (module, opt) in parts.items():
        if opt is not None:
            msd, osd = get_state_dict(module, opt)
            out[name] = {"model": msd, "optim": osd}
        else:
            out[name] = {"model": get_model_state_dict(module)}
    return out


class Checkpointer:
    """Saves and restores a run's training state under ``<run>/checkpoints``."""

    def __init__(self, run_dir: str | Path, dist: Dist, keep: int = 2) -> None:
        self.root = Path(run_dir) / "checkpoints"
        self.dist = dist
        self.keep = keep

    def latest(self) -> Path | None:
        pointer = self.root / "latest"
        if not pointer.is_file():
            return None
        path = self.root / pointer.read_text().strip()
        return path if (path / "trainer.pt").is_file() else None

    def save(self, step: int, parts: Parts, trainer_state: dict[str, Any]) -> Path:
        """Write a checkpoint for ``step`` (collective: every process calls it with the same parts)."""
        path = self.root / f"step_{step:07d}"
        if self.dist.is_main and path.exists():
            shutil.rmtree(path)
        barrier()
        dcp.save(_state(parts), checkpoint_id=str(path / "dcp"))
        (path / "rng").mkdir(parents=True, exist_ok=True)
        torch.save(rng_state(), path / "rng" / f"rank{self.dist.rank}.pt")
        if self.dist.is_main:
            torch.save({"step": step, **trainer_state}, path / "trainer.pt")
        barrier()
        if self.dist.is_main:
            (self.root / "latest").write_text(path.name)
            old = sorted(p for p in self.root.glob("step_*") if p.is_dir() and p != path)
            for p in old[: max(0, len(old) - self.keep + 1)]:
                shutil.rmtree(p, ignore_errors=True)
        barrier()
        logger.info("saved checkpoint %s", path)
        return path

    def load(self, path: str | Path, parts: Parts) -> dict[str, Any]:
        """Restore ``parts`` and this process's RNG from ``path``; returns the trainer state (with ``step``)."""
        path = Path(path)
        state = _state(parts)
        dcp.load(state, checkpoint_id=str(path / "dcp"))
        for name, (module, opt) in parts.items():
            if opt is not None:
                set_state_dict(module, opt, model_state_dict=state[name]["model"],
                               optim_state_dict=state[name]["optim"])
            else:
                set_model_state_dict(module, state[name]["model"])
        rng_file = path / "rng" / f"rank{self.dist.rank}.pt"
        if rng_file.is_file():
            set_rng_state(torch.load(rng_file, weights_only=True))
        else:
            logger.warning("%s has no RNG state for rank %d (different process count); RNG not restored",
                           path, self.dist.rank)
        trainer = torch.load(path / "trainer.pt", weights_only=True)
        logger.info("resumed from %s (step %d)", path, trainer["step"])
        return trainer
