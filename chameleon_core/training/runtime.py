"""The training runtime every stage shares: :class:`Run`, :func:`optimizer_update` and :func:`train_loop`.

A stage does::

    run = Run.start(cfg)                                  # process group, seeds, run folder, config.json
    with run.failing_fast():                              # an error on any process ends the job (see .faults)
        model = run.build_model(cfg.model.init)           # weights -> fp32 master -> checkpointing -> FSDP2
        opt = run.optimizer(model); sched = run.scheduler(opt)
        loader = run.loader()                             # latent cache, this process's share of each batch
        train_loop(run, model, opt, sched, loader, loss_fn)  # steps, clipping, metrics, checkpoints, resume
        run.export(model, kind="teacher")                 # through chameleon_core.checkpoints.save_transformer
    run.close()                                           # waits for the last checkpoint; no collective after an error

Stages with several models (GR-DMD: generator, critic, EMA) use the pieces directly: :meth:`Run.resume` /
:meth:`Run.save` take named ``(module, optimiser or None)`` parts, schedulers and the loader;
:meth:`Run.checkpoint_progress` runs at every step boundary; :func:`optimizer_update` is one optimiser step over
micro-batches; :meth:`Run.log` writes ``metrics.jsonl``; :func:`~.parallel.run_inside` runs a streaming rollout
inside the root forward.

Non-finite numbers stop the run (the policy): a loss that is NaN or inf stops it on the process that computed it,
before its backward, naming the step and the batch's cache items; a gradient norm that is NaN or inf (the same on
every process) stops it before the optimiser step. The weights therefore never take a non-finite update, and the
last checkpoint stays the resume point. The failure is appended to ``metrics.jsonl`` (``"failed": true``).
"""

from __future__ import annotations

import json
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from chameleon_core.config import preset
from chameleon_core.model import WanModel
from chameleon_core.precision import native_bf16

from .checkpoint import Checkpointer, Parts
from .config import TrainConfig
from .distributed import Dist, broadcast_object, init_distributed, mean_across, shutdown
from .faults import FailFast, TrainingError, append_failure_record, raised_everywhere
from .latent_cache import Batch, LatentCache, LatentLoader
from .metrics import Metrics
from .optim import build_optimizer, build_scheduler, clip_gradients
from .parallel import TrainableWanModel, export_weights, parse_dtype, prepare_model

logger = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Batch, int], "tuple[torch.Tensor, dict[str, float]]"]
StageLossFn = Callable[[nn.Module, Batch, int, TrainConfig, torch.dtype], "tuple[torch.Tensor, dict[str, float]]"]
"""A stage's loss: ``(model, batch, step, config, compute dtype) -> (loss, logged values)``."""
"""``loss_fn(model, micro_batch, step) -> (loss, extra metrics)``; the loss is the mean over the micro-batch."""


def load_weights(spec: str | None, arch: str, text_len: int | None = None) -> WanModel:
    """Weights for a model: a checkpoint path (any layout the loaders read) or ``random:SEED`` (``arch``'s shape).

    Returns an fp32 CPU :class:`WanModel`.
    """
    config = preset(arch)
    if text_len is not None:
        from dataclasses import replace

        config = replace(config, text_len=text_len)
    if spec is None:
        raise ValueError(
            "model.init is not set; give the starting weights (Wan2.2-TI2V-5B for sft, the SFT teacher for forcing) "
            "with --set model.init=PATH, or random:SEED for a test run"
        )
    if spec.startswith("random:"):
        from chameleon_core.random_models import random_transformer

        try:
            seed = int(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"model init {spec!r}: expected random:SEED with an integer seed") from None
        return random_transformer(config, seed=seed)
    from chameleon_core.checkpoints import load_transformer

    model = load_transformer(spec, dtype=torch.float32, device="cpu", text_len=text_len)
    if model.config.dim != config.dim or model.config.num_layers != config.num_layers:
        logger.warning("weights %s are %s, config model.arch is %s; using the weights' shape", spec,
                       model.config.name, arch)
    return model


def autocast_dtype(name: str, device: torch.device, *, fsdp: bool) -> torch.dtype | None:
    """``model.autocast`` as the dtype :func:`~chameleon_core.training.parallel.prepare_model` takes (None: fp32).
    ``auto`` picks bf16 where ``device`` multiplies it in hardware (:func:`~chameleon_core.precision.native_bf16`) and
    fp32 elsewhere, and says which; an explicit ``bf16`` on a CPU that emulates it runs as asked, with a warning."""
    if name == "off" or (name == "auto" and fsdp):
        return None
    native = native_bf16(device)
    if name == "auto":
        logger.info("model.autocast = auto: %s on %s (%s)", "bf16" if native else "fp32", device,
                    "bf16 matrix products in hardware" if native else
                    "no bf16 matrix products in hardware: PyTorch would emulate them, far slower than fp32")
        return torch.bfloat16 if native else None
    if not native:
        logger.warning("model.autocast = bf16 on %s, which has no bf16 matrix products in hardware (no AVX-512 BF16 "
                       "or AMX on a CPU): PyTorch emulates them, on a 2-core AVX2 CPU 60x slower than fp32; use "
                       "--set model.autocast=auto (or off)", device)
    return parse_dtype(name)


class NonFiniteLossError(TrainingError):
    """A loss or gradient norm turned NaN or inf: the run stops before the update (the documented policy)."""


class Run:
    """One stage's run: config, process placement, run folder, metrics and checkpoints."""

    def __init__(self, cfg: TrainConfig, dist: Dist) -> None:
        self.cfg = cfg
        self.dist = dist
        self.dir = Path(cfg.run.out)
        self.checkpointer = Checkpointer(self.dir, dist)
        self._metrics: Metrics | None = None
        self._pending_metrics: dict[str, float] = {}
        self.step = 0
        self.phase = "setup"
        """Where the run is, for error messages: ``setup``, ``step 4 of 6``, ``export``."""
        self.text_len: int | None = None
        """The prompt length the models take (set by :meth:`build_model`)."""

    # -- setup ------------------------------------------------------------------------------------------------

    @classmethod
    def start(cls, cfg: TrainConfig) -> Run:
        """Init the process group, seed every RNG (``run.seed + rank``), create the run folder, save the config."""
        dist = init_distributed(cfg.run.device)
        run = cls(cfg, dist)
        with run.failing_fast():
            if dist.world_size > 1 and not cfg.model.fsdp:
                raise raised_everywhere(ValueError(
                    f"{dist.world_size} processes need model.fsdp=true (FSDP2 is the only data-parallel path)"))
            seed = cfg.run.seed + dist.rank
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            if dist.is_main:
                if run.dir.exists() and not run.dir.is_dir():
                    raise ValueError(f"run.out={str(run.dir)!r} is a file; give a folder (it holds config.json, "
                                     "metrics.jsonl, checkpoints/ and export/)")
                run.dir.mkdir(parents=True, exist_ok=True)
                (run.dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        logger.info("%s: process %d of %d on %s, run folder %s", cfg.stage, dist.rank, dist.world_size, dist.device,
                    run.dir)
        return run

    def failing_fast(self) -> FailFast:
        """The guard for a stage's work: with several processes an error anywhere ends the job at once, printed
        by the process that raised it (see :mod:`.faults`); the failure is appended to ``metrics.jsonl``."""
        return FailFast(self.dist.rank, self.dist.world_size, self.cfg.stage, where=lambda: self.phase,
                        on_failure=self._record_failure)

    def _record_failure(self, e: BaseException, where: str) -> None:
        if self.dir.is_dir():
            append_failure_record(self.dir / "metrics.jsonl", self.step, self.dist.rank, e, where,
                                  getattr(e, "metrics", None))

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def compute_dtype(self) -> torch.dtype:
        return parse_dtype(self.cfg.model.param_dtype) if self.cfg.model.fsdp else torch.float32

    def build_model(self, init: str | None, *, trainable: bool = True, offload: bool = False) -> TrainableWanModel:
        """Load ``init`` and prepare it (fp32 master, checkpointing, FSDP2 per the config) on this device;
        ``offload``: keep its shards in host memory (a frozen model; :func:`~.parallel.prepare_model`)."""
        m = self.cfg.model
        broadcast = m.fsdp and self.dist.world_size > 1
        if broadcast:
            # Only rank 0 reads the weights (a 5B fp32 copy is 20 GB of host memory per process otherwise); the
            # others build the model on the meta device, and FSDP's state-dict loading broadcasts the shards.
            model = load_weights(init, m.arch, m.text_len) if self.dist.is_main else None
            config = broadcast_object(model.config if model is not None else None)
            if model is None:
                with torch.device("meta"):
                    model = WanModel(config)
        else:
            model = load_weights(init, m.arch, m.text_len)
        self.text_len = model.config.text_len if self.text_len is None else min(self.text_len, model.config.text_len)
        return prepare_model(
            model,
            broadcast_from_rank0=broadcast,
            device=self.device,
            fsdp=m.fsdp,
            param_dtype=parse_dtype(m.param_dtype),
            reduce_dtype=parse_dtype(m.reduce_dtype),
            activation_checkpointing=m.activation_checkpointing,
            trainable=trainable,
            offload=offload,
            autocast=autocast_dtype(m.autocast, self.device, fsdp=m.fsdp),
            compile_blocks=m.compile and trainable,
        )

    def optimizer(self, model: nn.Module, *, lr: float | None = None) -> torch.optim.AdamW:
        return build_optimizer(model.parameters(), self.cfg.optim, lr=lr)

    def scheduler(self, optimizer: torch.optim.Optimizer, warmup_steps: int | None = None, *,
                  total_steps: int | None = None):
        """The section's schedule over ``total_steps`` optimiser steps (default: ``run.steps``)."""
        o = self.cfg.optim
        return build_scheduler(optimizer, o.warmup_steps if warmup_steps is None else warmup_steps, decay=o.decay,
                               total_steps=self.cfg.run.steps if total_steps is None else total_steps,
                               min_ratio=o.min_lr_ratio)

    def loader(self) -> LatentLoader:
        """This process's loader over the latent cache, after checking (on every process alike) that every cached
        prompt fits the models' text length."""
        d, m = self.cfg.data, self.cfg.model
        try:
            text_len = self.text_len if self.text_len is not None else (m.text_len or preset(m.arch).text_len)
            cache = LatentCache(d.cache)
            cache.check_text_len(text_len)
            return LatentLoader(cache, batch_size=d.batch_size, rank=self.dist.rank,
                                world_size=self.dist.world_size, seed=self.cfg.run.seed,
                                full_prob=d.full_caption_prob, empty_prob=d.empty_text_prob, fixed=d.fixed_batch)
        except (ValueError, FileNotFoundError) as e:  # the same files on every process: the same error everywhere
            raise raised_everywhere(e) from None

    @property
    def micro_batch(self) -> int:
        local = self.cfg.data.batch_size // self.dist.world_size
        mb = self.cfg.data.micro_batch or local
        if local % mb:
            raise raised_everywhere(ValueError(f"data.micro_batch={mb} must divide the per-process batch {local}"))
        return mb

    # -- checkpoints --------------------------------------------------------------------------------------------

    def resume(self, parts: Parts, schedulers: Mapping[str, Any], loader: LatentLoader | None) -> dict[str, Any]:
        """Restore the run folder's latest checkpoint if ``run.resume`` (logging which one, or why none); sets and
        returns ``self.step`` in the trainer state (``{"step": 0}`` when starting fresh). A ``latest`` pointer
        that names a missing or incomplete checkpoint is an error (:class:`~.checkpoint.ResumeError`)."""
        self.phase = "resume"
        path = self.checkpointer.resume_point(self.cfg.run.resume)
        if path is None:
            self.step = 0
            return {"step": 0}
        state = self.checkpointer.load(path, parts)
        for name, sched in schedulers.items():
            sched.load_state_dict(state["schedulers"][name])
        if loader is not None:
            loader.load_state_dict(state["data"])
        self.step = int(state["step"])
        return state

    def save(self, parts: Parts, schedulers: Mapping[str, Any], loader: LatentLoader | None,
             extra: dict[str, Any] | None = None) -> Path:
        """Start an asynchronous checkpoint of the current ``self.step`` (collective; waits for the previous save
        first). The time the step waited goes into the next :meth:`log` record (``save_blocking_seconds``)."""
        phase, self.phase = self.phase, f"checkpoint of step {self.step}"
        trainer = {
            "schedulers": {n: s.state_dict() for n, s in schedulers.items()},
            "data": loader.state_dict() if loader is not None else {},
            **(extra or {}),
        }
        path, stats = self.checkpointer.save(self.step, parts, trainer, self.device)
        self._pending_metrics.update(stats)
        self.phase = phase
        return path

    def checkpoint_progress(self) -> None:
        """At a step boundary: notice a finished background save (its ``save_seconds`` go into the next
        :meth:`log` record) or a failed one (raised on every process). Collective while a save is in flight."""
        stats = self.checkpointer.progress(self.device)
        if stats:
            self._pending_metrics.update(stats)

    def finish_checkpoints(self) -> None:
        """Wait for the save in flight (collective)."""
        self.checkpointer.finish(self.device)

    # -- metrics and export -------------------------------------------------------------------------------------

    def log(self, step: int, **values: Any) -> dict[str, Any]:
        """Append to ``<run>/metrics.jsonl`` (rank 0) and advance the progress bar; checkpoint timings gathered since
        the last record join it."""
        if self._metrics is None:
            self._metrics = Metrics(self.dir / "metrics.jsonl", enabled=self.dist.is_main,
                                    total=self.cfg.run.steps, start=self.step, desc=self.cfg.stage)
        values = {**values, **self._pending_metrics}
        self._pending_metrics = {}
        return self._metrics.log(step, **values)

    def export(self, model: nn.Module, *, kind: str, name: str | None = None) -> Path | None:
        """Write final weights to ``<run>/export/<name or kind>.safetensors`` (collective; rank 0 writes). Weights
        holding NaN or inf are refused (:class:`~.parallel.NonFiniteWeightsError`), nothing is written."""
        self.phase = "export"
        path = self.dir / "export" / f"{name or kind}.safetensors"
        if self.dist.is_main:
            path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"fashionchameleon.stage": self.cfg.stage, "fashionchameleon.step": str(self.step)}
        return export_weights(model, path, kind=kind, is_main=self.dist.is_main,
                              dtype=parse_dtype(self.cfg.run.export_dtype), metadata=meta)

    def close(self) -> None:
        """Wait for the last checkpoint, close the metrics, leave the process group.

        Called from a ``finally`` while an error propagates (one process), it runs no collective: it only tears
        down. (With several processes an error never gets here: :meth:`failing_fast` ends the process.)"""
        failed = sys.exc_info()[1] is not None
        if not failed and self.checkpointer.in_flight:
            with self.failing_fast():
                self.phase = "last checkpoint"
                self.finish_checkpoints()
        if self._metrics is not None:
            self._metrics.close()
        shutdown(ok=not failed)


def optimizer_update(
    run: Run,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    micro: list[Batch],
    total: int,
    loss_fn: Callable[[Batch], tuple[torch.Tensor, dict[str, float]]],
    *,
    step: int,
    name: str = "loss",
) -> dict[str, float]:
    """One optimiser step over micro-batches: accumulate ``loss_fn(part)`` (each scaled by its share of the
    ``total`` local samples; FSDP reduces on the last), clip the global gradient norm, step. Returns the weighted
    means of ``loss`` and the extra values, ``grad_norm`` and ``lr``.

    A non-finite loss raises :class:`NonFiniteLossError` before its backward (on the process that computed it, naming
    the batch's items); a non-finite gradient norm raises it on every process before the update.
    """
    sums: dict[str, float] = {}
    for i, part in enumerate(micro):
        if hasattr(model, "set_requires_gradient_sync"):
            model.set_requires_gradient_sync(i == len(micro) - 1)
        loss, extra = loss_fn(part.to(run.device))
        value = float(loss.detach())
        if not math.isfinite(value):
            error = NonFiniteLossError(
                f"the {name} is {value} at step {step + 1} on the batch items {part.keys} (cache "
                f"{run.cfg.data.cache}, rank {run.dist.rank}); the run stops before this update, so the weights stay finite and the last "
                f"checkpoint is the resume point. Check those items for NaN/inf (a damaged or badly encoded "
                f"clip: delete their files under items/ and rerun prepare) and the settings that scale the loss "
                f"(optim.lr, flow.shift)"
            )
            error.metrics = {"nonfinite": name, "items": list(part.keys)}  # type: ignore[attr-defined]
            raise error
        (loss * (len(part) / total)).backward()
        for k, v in {"loss": value, **extra}.items():
            sums[k] = sums.get(k, 0.0) + v * len(part) / total
    grad_norm = clip_gradients(model.parameters(), run.cfg.optim.clip)
    if not math.isfinite(grad_norm):
        keys = [k for part in micro for k in part.keys]
        raise raised_everywhere(NonFiniteLossError(
            f"the gradient norm of the {name} is {grad_norm} at step {step + 1} (the same on every process; this "
            f"process's losses were finite, its items {keys}); the run stops before the update, so the weights stay "
            "finite and the last checkpoint is the resume point. Lower optim.lr or check the data for extreme values"
        ))
    sums["grad_norm"] = grad_norm
    sums["lr"] = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return sums


def train_loop(
    run: Run,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    loader: LatentLoader,
    loss_fn: LossFn,
) -> int:
    """The single-model loop: resume, then per step: local batch -> micro-batches -> backward -> clip -> step.

    Gradients of the micro-batches accumulate (each loss scaled by its share of the local batch), and FSDP averages
    across processes, so a step's gradient is the mean over the global batch whatever the process count. Stops at
    ``run.steps`` or after ``run.stop_after`` steps of this invocation (checkpointing first), then waits for the
    last checkpoint. Returns the last step.
    """
    cfg = run.cfg
    parts = {"model": (model, optimizer)}
    run.resume(parts, {"model": scheduler}, loader)
    start = run.step
    if start >= cfg.run.steps:
        logger.info("run already at step %d of %d; nothing to train", start, cfg.run.steps)
        return start
    mb = run.micro_batch
    global_batch = cfg.data.batch_size
    while run.step < cfg.run.steps:
        step = run.step
        run.phase = f"step {step + 1} of {cfg.run.steps}"
        run.checkpoint_progress()
        t0 = time.perf_counter()
        batch = loader.next(step)
        values = optimizer_update(run, model, optimizer, scheduler, batch.split(mb), len(batch),
                                  lambda part, step=step: loss_fn(model, part, step), step=step)
        run.step = step + 1
        seconds = time.perf_counter() - t0
        stop = cfg.run.stop_after is not None and run.step - start >= cfg.run.stop_after
        if run.step % cfg.run.save_every == 0 or run.step == cfg.run.steps or stop:
            run.save(parts, {"model": scheduler}, loader)
        if run.step % cfg.run.log_every == 0 or run.step == cfg.run.steps:
            lr, grad_norm = values.pop("lr"), values.pop("grad_norm")
            logged = {k: mean_across(v, run.device) for k, v in values.items()}
            run.log(run.step, **logged, lr=lr, grad_norm=grad_norm, seconds_per_step=seconds,
                    samples_per_second=global_batch / seconds)
        if stop:
            logger.info("stopping after %d steps (run.stop_after) at step %d", cfg.run.stop_after, run.step)
            break
    run.phase = "last checkpoint"
    run.finish_checkpoints()
    return run.step


def run_single_model_stage(cfg: TrainConfig, run: Run | None, loss: StageLossFn, kind: str) -> int:
    """Train one model with ``loss(model, batch, step, cfg, compute_dtype)`` and export it as ``kind``; returns the
    last step. The SFT and teacher-forcing stages are this, with their own loss. With ``run`` given (the benchmark),
    the caller closes it."""
    own = run is None
    run = Run.start(cfg) if own else run
    try:
        with run.failing_fast():
            model = run.build_model(cfg.model.init)
            optimizer = run.optimizer(model)
            scheduler = run.scheduler(optimizer)
            loader = run.loader()
            dtype = run.compute_dtype
            last = train_loop(run, model, optimizer, scheduler, loader, lambda m, b, s: loss(m, b, s, cfg, dtype))
            if cfg.run.export and last >= cfg.run.steps:
                run.export(model, kind=kind)
    finally:  # reached after an error with one process only; close() then runs no collective
        if own:
            run.close()
    return last
