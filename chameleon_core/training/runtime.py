"""The training runtime every stage shares: :class:`Run` and :func:`train_loop`.

A stage does::

    run = Run.start(cfg)                                  # process group, seeds, run folder, config.json
    model = run.build_model(cfg.model.init)               # weights -> fp32 master -> checkpointing -> FSDP2
    opt = run.optimizer(model); sched = run.scheduler(opt)
    loader = run.loader()                                 # latent cache, this process's share of each batch
    train_loop(run, model, opt, sched, loader, loss_fn)   # steps, clipping, metrics, checkpoints, resume
    run.export(model, kind="teacher")                     # through chameleon_core.checkpoints.save_transformer
    run.close()

Stages with several models (GR-DMD: generator, critic, EMA) use the pieces directly: :meth:`Run.resume` /
:meth:`Run.save` take named ``(module, optimiser or None)`` parts, schedulers and the loader; :meth:`Run.log`
writes ``metrics.jsonl``; :func:`~.parallel.run_inside` runs a streaming rollout inside the root forward.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from chameleon_core.config import preset
from chameleon_core.model import WanModel

from .checkpoint import Checkpointer, Parts
from .config import TrainConfig
from .distributed import Dist, broadcast_object, init_distributed, mean_across, shutdown
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
        from chameleon_core.testing import tiny_transformer

        try:
            seed = int(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"model init {spec!r}: expected random:SEED with an integer seed") from None
        return tiny_transformer(seed, config)
    from chameleon_core.checkpoints import load_transformer

    model = load_transformer(spec, dtype=torch.float32, device="cpu", text_len=text_len)
    if model.config.dim != config.dim or model.config.num_layers != config.num_layers:
        logger.warning("weights %s are %s, config model.arch is %s; using the weights' shape", spec,
                       model.config.name, arch)
    return model


class Run:
    """One stage's run: config, process placement, run folder, metrics and checkpoints."""

    def __init__(self, cfg: TrainConfig, dist: Dist) -> None:
        self.cfg = cfg
        self.dist = dist
        self.dir = Path(cfg.run.out)
        self.checkpointer = Checkpointer(self.dir, dist)
        self._metrics: Metrics | None = None
        self.step = 0

    # -- setup ------------------------------------------------------------------------------------------------

    @classmethod
    def start(cls, cfg: TrainConfig) -> Run:
        """Init the process group, seed every RNG (``run.seed + rank``), create the run folder, save the config."""
        dist = init_distributed(cfg.run.device)
        if dist.world_size > 1 and not cfg.model.fsdp:
            raise ValueError(f"{dist.world_size} processes need model.fsdp=true (FSDP2 is the only data-parallel path)")
        seed = cfg.run.seed + dist.rank
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        run = cls(cfg, dist)
        if dist.is_main:
            run.dir.mkdir(parents=True, exist_ok=True)
            (run.dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        logger.info("%s: process %d of %d on %s, run folder %s", cfg.stage, dist.rank, dist.world_size, dist.device,
                    run.dir)
        return run

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def compute_dtype(self) -> torch.dtype:
        return parse_dtype(self.cfg.model.param_dtype) if self.cfg.model.fsdp else torch.float32

    def build_model(self, init: str | None, *, trainable: bool = True) -> TrainableWanModel:
        """Load ``init`` and prepare it (fp32 master, checkpointing, FSDP2 per the config) on this device."""
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
        return prepare_model(
            model,
            broadcast_from_rank0=broadcast,
            device=self.device,
            fsdp=m.fsdp,
            param_dtype=parse_dtype(m.param_dtype),
            reduce_dtype=parse_dtype(m.reduce_dtype),
            activation_checkpointing=m.activation_checkpointing,
            trainable=trainable,
        )

    def optimizer(self, model: nn.Module, *, lr: float | None = None) -> torch.optim.AdamW:
        return build_optimizer(model.parameters(), self.cfg.optim, lr=lr)

    def scheduler(self, optimizer: torch.optim.Optimizer, warmup_steps: int | None = None):
        return build_scheduler(optimizer, self.cfg.optim.warmup_steps if warmup_steps is None else warmup_steps)

    def loader(self) -> LatentLoader:
        d = self.cfg.data
        return LatentLoader(LatentCache(d.cache), batch_size=d.batch_size, rank=self.dist.rank,
                            world_size=self.dist.world_size, seed=self.cfg.run.seed, full_prob=d.full_caption_prob,
                            empty_prob=d.empty_text_prob, fixed=d.fixed_batch)

    @property
    def micro_batch(self) -> int:
        local = self.cfg.data.batch_size // self.dist.world_size
        mb = self.cfg.data.micro_batch or local
        if local % mb:
            raise ValueError(f"data.micro_batch={mb} must divide the per-process batch {local}")
        return mb

    # -- checkpoints --------------------------------------------------------------------------------------------

    def resume(self, parts: Parts, schedulers: Mapping[str, Any], loader: LatentLoader | None) -> dict[str, Any]:
        """Restore the latest checkpoint of the run folder if ``run.resume``; sets and returns ``self.step`` in the
        trainer state (``{"step": 0}`` when starting fresh)."""
        path = self.checkpointer.latest() if self.cfg.run.resume else None
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
        """Checkpoint the current ``self.step`` (collective)."""
        trainer = {
            "schedulers": {n: s.state_dict() for n, s in schedulers.items()},
            "data": loader.state_dict() if loader is not None else {},
            **(extra or {}),
        }
        return self.checkpointer.save(self.step, parts, trainer)

    # -- metrics and export -------------------------------------------------------------------------------------

    def log(self, step: int, **values: Any) -> dict[str, Any]:
        """Append to ``<run>/metrics.jsonl`` (rank 0) and advance the progress bar."""
        if self._metrics is None:
            self._metrics = Metrics(self.dir / "metrics.jsonl", enabled=self.dist.is_main,
                                    total=self.cfg.run.steps, start=self.step, desc=self.cfg.stage)
        return self._metrics.log(step, **values)

    def export(self, model: nn.Module, *, kind: str, name: str | None = None) -> Path | None:
        """Write final weights to ``<run>/export/<name or kind>.safetensors`` (collective; rank 0 writes)."""
        path = self.dir / "export" / f"{name or kind}.safetensors"
        if self.dist.is_main:
            path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"fashionchameleon.stage": self.cfg.stage, "fashionchameleon.step": str(self.step)}
        return export_weights(model, path, kind=kind, is_main=self.dist.is_main,
                              dtype=parse_dtype(self.cfg.run.export_dtype), metadata=meta)

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
        shutdown()


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
    ``run.steps`` or after ``run.stop_after`` steps of this invocation (checkpointing first). Returns the last step.
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
        t0 = time.perf_counter()
        step = run.step
        batch = loader.next(step)
        micro = batch.split(mb)
        totals: dict[str, float] = {}
        for i, part in enumerate(micro):
            sync = i == len(micro) - 1
            if hasattr(model, "set_requires_gradient_sync"):
                model.set_requires_gradient_sync(sync)
            loss, extra = loss_fn(model, part.to(run.device), step)
            (loss * (len(part) / len(batch))).backward()
            for k, v in {"loss": float(loss.detach()), **extra}.items():
                totals[k] = totals.get(k, 0.0) + v * len(part) / len(batch)
        grad_norm = clip_gradients(model.parameters(), cfg.optim.clip)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        run.step = step + 1
        seconds = time.perf_counter() - t0
        if run.step % cfg.run.log_every == 0 or run.step == cfg.run.steps:
            values = {k: mean_across(v, run.device) for k, v in totals.items()}
            run.log(run.step, **values, lr=lr, grad_norm=grad_norm, seconds_per_step=seconds,
                    samples_per_second=global_batch / seconds)
        stop = cfg.run.stop_after is not None and run.step - start >= cfg.run.stop_after
        if run.step % cfg.run.save_every == 0 or run.step == cfg.run.steps or stop:
            run.save(parts, {"model": scheduler}, loader)
        if stop:
            logger.info("stopping after %d steps (run.stop_after) at step %d", cfg.run.stop_after, run.step)
            break
    return run.step


def run_single_model_stage(cfg: TrainConfig, run: Run | None, loss: StageLossFn, kind: str) -> int:
    """Train one model with ``loss(model, batch, step, cfg, compute_dtype)`` and export it as ``kind``; returns the
    last step. The SFT and teacher-forcing stages are this, with their own loss. With ``run`` given (the benchmark),
    the caller closes it."""
    own = run is None
    run = Run.start(cfg) if own else run
    try:
        model = run.build_model(cfg.model.init)
        optimizer = run.optimizer(model)
        scheduler = run.scheduler(optimizer)
        dtype = run.compute_dtype
        last = train_loop(run, model, optimizer, scheduler, run.loader(), lambda m, b, s: loss(m, b, s, cfg, dtype))
        if cfg.run.export and last >= cfg.run.steps:
            run.export(model, kind=kind)
        return last
    finally:
        if own:
            run.close()
