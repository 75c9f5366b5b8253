"""Resumable training checkpoints, saved asynchronously, read without running code from the files.

One checkpoint is a folder ``<run>/checkpoints/step_NNNNNNN/``:

- ``dcp/`` -- model(s) and optimiser(s), sharded, written by every process with ``torch.distributed.checkpoint``
  (state dicts from :func:`~torch.distributed.checkpoint.state_dict.get_state_dict`, so a run can resume on a
  different number of processes);
- ``trainer.pt`` -- step, scheduler states, data position and anything else the stage passes (rank 0);
- ``rng/rank<R>.pt`` -- torch CPU/CUDA, python and numpy RNG states of each process.

**Asynchronous saves.** :meth:`Checkpointer.save` copies the state to host memory (DCP's staging: the only part the
step waits for) and writes it from a background thread (``dcp.async_save``) while training goes on, on a gloo group
of its own (:func:`~.distributed.checkpoint_group`); a single process runs DCP with no collectives at all
(:func:`_dcp_group`: after DCP's gloo collectives, a one-process CPU run trained 1.55x slower for the rest of the
run, measured). At most one save is in flight: the next save first waits for
the previous one. Every process calls :meth:`Checkpointer.progress` at each step boundary while a save is in flight;
one small collective tells all of them at the same step whether the save finished everywhere or failed anywhere.

**What resuming trusts.** ``<run>/checkpoints/latest`` names the newest *complete* checkpoint; rank 0 writes it
(atomically) only after the save finished on every process, so an interruption or a full disk while saving leaves
the previous checkpoint in charge. A ``latest`` that names a missing or incomplete folder is an error, never a fresh
start. A run deletes only checkpoints it wrote itself (keeping the newest ``keep``), and never reuses the folder of
an earlier run: a name already taken gets a suffix (``step_0000500.1``).

**No code from the files.** DCP reads its ``.metadata`` with ``pickle.load`` and non-tensor entries with
``torch.load(weights_only=False)``; here the metadata goes through :class:`SafeMetadataUnpickler` (an allow-list of
DCP's metadata classes, torch sizes and dtypes) and the entries through ``torch.load(weights_only=True)``
(:class:`SafeFileSystemReader`, :class:`SafeLoadPlanner`). ``trainer.pt`` and the RNG files are read with
``weights_only=True`` too.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import pickle
import random
import re
import shutil
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import CheckpointException, FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from .distributed import Dist, all_gather_object, broadcast_object, checkpoint_group, max_across
from .faults import TrainingError, add_exit_hook, raised_everywhere, remove_exit_hook

logger = logging.getLogger(__name__)

Parts = Mapping[str, "tuple[nn.Module, torch.optim.Optimizer | None]"]
"""Named (module, optimiser or None) pairs: e.g. ``{"generator": (g, opt_g), "critic": (c, opt_c), "ema": (e, None)}``."""

LATEST = "latest"
FINISH_ON_FAILURE_S = 20.0
"""How long a process that fails waits for the save in flight to finish (everywhere) before it leaves, so that a
checkpoint written just before the failure becomes the resume point."""
_FOLDER = re.compile(r"^step_\d{7}(\.\d+)?$")


class ResumeError(TrainingError):
    """The run folder's checkpoints cannot be resumed from (broken pointer, damaged or foreign files)."""


class UnsafeCheckpointError(ResumeError):
    """A checkpoint file refers to something a checkpoint never holds (it could run code when unpickled)."""


class CheckpointSaveError(TrainingError):
    """Writing a checkpoint failed (a full disk, a lost mount); the previous checkpoint stays the resume point."""


# -------------------------------------------------------------------------------------------------------------------
# RNG state
# -------------------------------------------------------------------------------------------------------------------


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


def _dcp_group() -> dict[str, Any]:
    """DCP's group arguments: the checkpoint gloo group when several processes share the run, none for one.

    The files are the same either way (a one-process run resumes on several and back). One process needs no
    collective, and DCP's gloo collectives slowed the rest of a one-process CPU run (2 torch threads, the world
    pipeline's SFT: 0.096 -> 0.155 s a step after its first save, for good; with ``no_dist`` no change)."""
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        return {"process_group": checkpoint_group()}
    return {"no_dist": True}


def _state(parts: Parts) -> dict[str, Any]:
    out = {}
    for name, (module, opt) in parts.items():
        if opt is not None:
            msd, osd = get_state_dict(module, opt)
            out[name] = {"model": msd, "optim": osd}
        else:
            out[name] = {"model": get_model_state_dict(module)}
    return out


# -------------------------------------------------------------------------------------------------------------------
# Reading DCP files without running code
# -------------------------------------------------------------------------------------------------------------------

_DCP_METADATA_CLASSES = ("Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata",
                         "TensorProperties", "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING")
SAFE_METADATA_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {("torch.distributed.checkpoint.metadata", n) for n in _DCP_METADATA_CLASSES}
    | {("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
       ("torch.distributed.checkpoint.filesystem", "_StoragePrefix"),
       ("torch", "Size"), ("torch.serialization", "_get_layout"),
       ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"), ("pathlib", "WindowsPath"),
       ("pathlib", "PureWindowsPath"), ("collections", "OrderedDict"), ("builtins", "set"),
       ("builtins", "frozenset")}
)
"""What a DCP ``.metadata`` file refers to (besides torch dtypes): the metadata dataclasses, the file-system
writer's storage records, ``torch.Size``, layouts, paths. Nothing here runs code when built."""


class SafeMetadataUnpickler(pickle.Unpickler):
    """Unpickles a DCP ``.metadata`` file, refusing any global outside :data:`SAFE_METADATA_GLOBALS` and torch's
    dtypes (a planted file would name ``os.system``, ``builtins.exec``, ...)."""

    def __init__(self, file: Any, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in SAFE_METADATA_GLOBALS:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise UnsafeCheckpointError(
            f"{self.source} refers to {module}.{name}, which a checkpoint's metadata never holds; it was not "
            "written by this trainer (unpickling it could run code), so it is not read. Restore the checkpoint from "
            "a copy you trust, or point checkpoints/latest at another checkpoint, or start over with "
            "--set run.resume=false"
        )


class SafeFileSystemReader(FileSystemReader):
    """DCP's file-system reader with :class:`SafeMetadataUnpickler` for ``.metadata``."""

    def read_metadata(self, *args: Any, **kwargs: Any):  # noqa: ANN201 - DCP's Metadata
        rank = kwargs.get("rank")
        path = self._get_metadata_path(rank)
        with self.fs.create_stream(path, "rb") as f:
            try:
                metadata = SafeMetadataUnpickler(f, str(path)).load()
            except UnsafeCheckpointError:
                raise
            except Exception as e:  # truncated or not a pickle at all
                raise ResumeError(f"checkpoint metadata {path} is damaged ({type(e).__name__}: {e}); point "
                                  "checkpoints/latest at another checkpoint or set run.resume=false") from None
        from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

        if not isinstance(metadata, Metadata):
            raise ResumeError(f"checkpoint metadata {path} holds a {type(metadata).__name__}, not DCP metadata")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's default load planner, reading non-tensor entries with ``torch.load(weights_only=True)``."""

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        try:
            obj = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as e:
            raise UnsafeCheckpointError(
                f"checkpoint entry {read_item.dest_index.fqn!r} holds an object a checkpoint never holds "
                f"({str(e).splitlines()[0]}); it was not written by this trainer and is not read. Restore the "
                "checkpoint from a copy you trust or start over with --set run.resume=false"
            ) from None
        if self.flatten_state_dict:
            from torch.distributed.checkpoint._traverse import set_element

            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


# -------------------------------------------------------------------------------------------------------------------
# The checkpointer
# -------------------------------------------------------------------------------------------------------------------


def _causes(e: BaseException | None, rank: int) -> dict[int, BaseException]:
    """``{rank: exception}`` of a failed DCP call: every rank's cause from DCP's CheckpointException (which gathers
    them), else this rank's own exception."""
    if e is None:
        return {}
    failures = getattr(e, "failures", None)
    if isinstance(failures, dict):
        return {int(r): (w[0] if isinstance(w, tuple) else w) for r, w in failures.items()}
    return {rank: e}


def _failures(e: BaseException | None, rank: int) -> dict[int, str]:
    """``{rank: "Type: message"}`` of :func:`_causes` (picklable, for gathering)."""
    return {r: f"{type(c).__name__}: {c}" for r, c in _causes(e, rank).items()}


@dataclass
class _Save:
    """A save in flight."""

    step: int
    path: Path
    future: Future
    started: float
    done_at: list[float] = field(default_factory=list)
    committed: bool = False


class Checkpointer:
    """Saves and restores a run's training state under ``<run>/checkpoints`` (every method that saves or loads is
    collective: every process calls it at the same point)."""

    def __init__(self, run_dir: str | Path, dist: Dist, keep: int = 2) -> None:
        self.root = Path(run_dir) / "checkpoints"
        self.dist = dist
        self.keep = keep
        self._pending: _Save | None = None
        self._written: list[str] = []
        """Complete checkpoints written by this run, oldest first: the only ones it may delete."""
        self._last_good: Path | None = None
        """The newest complete checkpoint known: resumed from, or written by this run."""
        self._lock = threading.Lock()
        self._told_earlier = False

    # -- resuming -----------------------------------------------------------------------------------------------

    def latest(self) -> Path | None:
        """The checkpoint ``checkpoints/latest`` names, checked complete; None when there is no pointer.

        Raises :class:`ResumeError` (on every process) when the pointer is unreadable or names a missing or
        incomplete folder."""
        pointer = self.root / LATEST
        if not pointer.exists() and not pointer.is_symlink():
            return None
        try:
            name = pointer.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise raised_everywhere(ResumeError(
                f"{pointer} cannot be read ({e}); it should hold the name of a checkpoint folder such as "
                f"step_0000250. {self._choices()}"))
        if not _FOLDER.match(name):
            raise raised_everywhere(ResumeError(
                f"{pointer} holds {name[:80]!r}, not a checkpoint folder name (step_NNNNNNN). {self._choices()}"))
        path = self.root / name
        missing = [p for p in (path / "trainer.pt", path / "dcp" / ".metadata") if not p.is_file()]
        if missing:
            raise raised_everywhere(ResumeError(
                f"{pointer} names {name}, but {', '.join(str(m) for m in missing)} "
                f"{'is' if len(missing) == 1 else 'are'} missing: the checkpoint is gone or incomplete, so the run "
                f"cannot resume from it (it does not start over by itself). {self._choices()}"))
        return path

    def _complete(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if _FOLDER.match(p.name) and (p / "trainer.pt").is_file()
                      and (p / "dcp" / ".metadata").is_file())

    def _choices(self) -> str:
        complete = self._complete()
        where = (f"Complete checkpoints in {self.root}: {', '.join(complete)}; write one of these names into "
                 f"{self.root / LATEST}" if complete else f"{self.root} holds no complete checkpoint")
        return f"{where}, or start over with --set run.resume=false (or a new run.out)."

    def resume_point(self, enabled: bool) -> Path | None:
        """The checkpoint to resume from (``enabled``: ``run.resume``), logging which one or why none."""
        if not enabled:
            if self.root.is_dir() and any(_FOLDER.match(p.name) for p in self.root.iterdir()):
                logger.info("run.resume=false: starting at step 0; the checkpoints already in %s stay (new ones "
                            "get folders of their own)", self.root)
            else:
                logger.info("run.resume=false: starting at step 0")
            return None
        path = self.latest()
        if path is not None:
            logger.info("resuming from %s", path)
            return path
        leftovers = sorted(p.name for p in self.root.iterdir() if _FOLDER.match(p.name)) if self.root.is_dir() else []
        if leftovers:
            logger.warning("no %s pointer in %s, so no complete checkpoint: starting at step 0 (the incomplete "
                           "folder(s) %s, left by an interrupted save, stay in place)", LATEST, self.root,
                           ", ".join(leftovers))
        else:
            logger.info("no checkpoint in %s: starting at step 0", self.root)
        return None

    def load(self, path: str | Path, parts: Parts) -> dict[str, Any]:
        """Restore ``parts`` and this process's RNG from ``path``; returns the trainer state (with ``step``)."""
        path = Path(path)
        state = _state(parts)
        try:
            # Read (and so check) the metadata here first: inside dcp.load a refusal becomes a bare message.
            SafeFileSystemReader(str(path / "dcp")).read_metadata()
            dcp.load(state, storage_reader=SafeFileSystemReader(str(path / "dcp")), planner=SafeLoadPlanner(),
                     **_dcp_group())
        except ResumeError as e:
            raise raised_everywhere(e) from None
        except (Exception, CheckpointException) as e:  # DCP gathers every rank's failure into one, raised everywhere
            causes = _causes(e, self.dist.rank)
            ours = [c for c in causes.values() if isinstance(c, ResumeError)]  # a refused or damaged file
            if ours:
                raise raised_everywhere(ours[0]) from None
            detail = "; ".join(f"rank {r}: {type(c).__name__}: {c}" for r, c in sorted(causes.items()))
            raise raised_everywhere(ResumeError(
                f"checkpoint {path} does not load into this run's models ({detail[:800]}); resume with the config "
                "and model sizes that wrote it, or start over with --set run.resume=false or a new run.out")) from None
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
        self._last_good = path
        logger.info("resumed from %s (step %d)", path, trainer["step"])
        return trainer

    # -- saving ---------------------------------------------------------------------------------------------------

    @property
    def in_flight(self) -> bool:
        return self._pending is not None

    def _folder_name(self, step: int) -> str:
        name = f"step_{step:07d}"
        if not (self.root / name).exists():
            return name
        n = 1
        while (self.root / f"{name}.{n}").exists():
            n += 1
        logger.warning("%s already exists (written by an earlier run, not resumed from); it stays, this checkpoint "
                       "goes to %s.%d", self.root / name, name, n)
        return f"{name}.{n}"

    def save(self, step: int, parts: Parts, trainer_state: dict[str, Any], device: torch.device
             ) -> tuple[Path, dict[str, float]]:
        """Start writing a checkpoint for ``step``; returns its folder and timings: ``save_wait_seconds`` (waiting
        for the previous save to finish), ``save_blocking_seconds`` (what this save held the step for: the staging
        copy and the small files), and ``saved_step`` / ``save_seconds`` when the previous save finished during the
        wait."""
        t0 = time.perf_counter()
        stats: dict[str, float] = {}
        if self._pending is not None:
            stats.update(self.progress(device, wait=True) or {})
        t1 = time.perf_counter()
        stats["save_wait_seconds"] = t1 - t0
        name = broadcast_object(self._folder_name(step) if self.dist.is_main else None)
        path = self.root / name
        try:
            (path / "rng").mkdir(parents=True, exist_ok=True)
            torch.save(rng_state(), path / "rng" / f"rank{self.dist.rank}.pt")
            if self.dist.is_main:
                torch.save({"step": step, **trainer_state}, path / "trainer.pt")
            state = _state(parts)
            future = dcp.async_save(state, storage_writer=FileSystemWriter(str(path / "dcp")), **_dcp_group())
        except OSError as e:
            raise CheckpointSaveError(self._failure_message(path, f"rank {self.dist.rank}: {e}", e, removed=False)
                                      ) from None
        pending = _Save(step, path, future, t0)
        future.add_done_callback(lambda _f, p=pending: self._on_done(p))
        self._pending = pending
        add_exit_hook(self._on_exit)
        stats["save_blocking_seconds"] = time.perf_counter() - t1
        return path, stats

    def progress(self, device: torch.device, *, wait: bool = False) -> dict[str, float] | None:
        """Check the save in flight (collective while one is): ``{"saved_step", "save_seconds"}`` once it finished
        on every process (rank 0 then points ``latest`` at it and deletes this run's older checkpoints), None while
        it runs or when none is in flight. Raises :class:`CheckpointSaveError` on every process if it failed on any.
        ``wait``: block until it is over."""
        p = self._pending
        if p is None:
            return None
        if wait:
            wait_futures([p.future])
        local_failed = p.future.done() and p.future.exception() is not None
        failed, running = max_across([int(local_failed), int(not p.future.done())], device)
        if failed:
            self._pending = None
            remove_exit_hook(self._on_exit)
            self._raise_failure(p)
        if running:
            return None
        self._pending = None
        remove_exit_hook(self._on_exit)
        self._commit(p)
        seconds = (p.done_at[0] if p.done_at else time.perf_counter()) - p.started
        return {"saved_step": float(p.step), "save_seconds": seconds}

    def finish(self, device: torch.device) -> dict[str, float] | None:
        """Wait for the save in flight (collective); see :meth:`progress`."""
        return self.progress(device, wait=True)

    def _on_done(self, p: _Save) -> None:
        """The background save ended (DCP's thread). On rank 0 a success means every process's part and the
        metadata are written (DCP's coordinator finishes last), so ``latest`` can point at it right away."""
        p.done_at.append(time.perf_counter())
        if p.future.exception() is None:
            try:
                self._commit(p)
            except OSError as e:  # the step boundary repeats the commit and reports a failure there
                logger.warning("could not point %s at %s yet: %s", self.root / LATEST, p.path, e)

    def _on_exit(self, failing: bool) -> None:
        """Before leaving on a failure: a save that completed becomes the resume point; the process that failed
        first lets the save in flight finish (the others are still alive to write their parts)."""
        p = self._pending
        remove_exit_hook(self._on_exit)
        if p is None:
            return
        if failing:
            wait_futures([p.future], timeout=FINISH_ON_FAILURE_S)
        if p.future.done() and p.future.exception() is None:
            self._commit(p)

    def _commit(self, p: _Save) -> None:
        """Make ``p`` the resume point (rank 0 writes ``latest``) and delete this run's older checkpoints beyond
        ``keep``; idempotent."""
        with self._lock:
            if p.committed:
                return
            if self.dist.is_main:
                tmp = self.root / f"{LATEST}.tmp"
                tmp.write_text(p.path.name)
                os.replace(tmp, self.root / LATEST)  # atomic: a reader sees the old name or the new one
                self._written.append(p.path.name)
                for old in self._written[: max(0, len(self._written) - self.keep)]:
                    shutil.rmtree(self.root / old, ignore_errors=True)
                self._written = self._written[max(0, len(self._written) - self.keep):]
                if not self._told_earlier:
                    self._told_earlier = True
                    earlier = [n for n in self._complete() if n not in self._written]
                    if earlier:
                        logger.info("checkpoints written before this run stay in %s (it deletes only its own): %s",
                                    self.root, ", ".join(earlier))
            p.committed = True
            self._last_good = p.path
        seconds = (p.done_at[0] if p.done_at else time.perf_counter()) - p.started
        logger.info("saved checkpoint %s (%.1f s, written in the background)", p.path, seconds)

    def _raise_failure(self, p: _Save) -> None:
        # DCP reports a failed write on every process; a failure before its collectives is known to one only, so
        # every process shares what it knows (a short wait: the others' saves end with the same error).
        wait_futures([p.future], timeout=10.0)
        local = p.future.exception() if p.future.done() else None
        known: dict[int, str] = {}
        for part in all_gather_object(_failures(local, self.dist.rank)):
            known.update(part)
        detail = "; ".join(f"rank {r}: {t}" for r, t in sorted(known.items())) or "no process reported the cause"
        if self.dist.is_main:
            shutil.rmtree(p.path, ignore_errors=True)  # written by this run; frees the space it took
        raise raised_everywhere(CheckpointSaveError(self._failure_message(p.path, detail, None, removed=True)))

    def _failure_message(self, path: Path, detail: str, cause: BaseException | None, *, removed: bool) -> str:
        previous = (f"the previous checkpoint {self._last_good} is complete and stays the resume point"
                    if self._last_good is not None else "there is no earlier checkpoint to resume from")
        partial = "; the partial folder was removed" if removed else ""
        space = ("free disk space, " if (cause is not None and getattr(cause, "errno", None) in
                                          (errno.ENOSPC, errno.EDQUOT)) or "No space left" in detail else "")
        return (f"saving checkpoint {path} failed ({detail}); {previous}{partial}. Fix the cause ({space}check "
                f"that {self.root} is writable from every node), then rerun the same command to resume")
