"""Training configuration: one frozen :class:`TrainConfig` with a section per concern, loaded from JSON.

A config file is JSON with the sections below (every field optional; defaults are the paper's 5B values where the
paper gives one). Presets ship as files in ``chameleon_core/training/presets/`` (``sft_5b``, ``forcing_5b``,
``dmd_5b`` and ``tiny_*``); ``--config NAME`` picks a preset, ``--config PATH.json`` a file. Overrides
``--set section.field=value`` take JSON values (``--set optim.lr=2e-5``, ``--set optim.betas=[0,0.999]``) and
fall back to a string (``--set run.out=runs/x``).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRESET_DIR = Path(__file__).resolve().parent / "presets"
STAGES = ("sft", "forcing", "dmd")


@dataclass(frozen=True)
class ModelSection:
    arch: str = "wan2.2-ti2v-5b"
    """Architecture preset of :mod:`chameleon_core.config` (``wan2.2-ti2v-5b``, ``tiny``)."""
    init: str | None = None
    """Weights to start from: a checkpoint path (any layout :func:`chameleon_core.loading.load_transformer`
    reads), or ``random:SEED`` (seeded tiny-style init, for tests). SFT starts from Wan2.2-TI2V-5B, forcing from the
    SFT teacher, DMD's generator from the forcing student."""
    text_len: int | None = None
    """Prompt length the model pads to (default: the architecture's, 512)."""
    param_dtype: str = "bf16"
    """Compute dtype of the parameters under FSDP (``bf16`` as the paper, ``fp32`` for CPU tests). Master weights
    and optimiser state stay fp32."""
    reduce_dtype: str = "fp32"
    """Dtype of gradient reductions across processes."""
    fsdp: bool = True
    """Shard parameters, gradients and optimiser state with FSDP2 (``fully_shard``); required for > 1 process."""
    activation_checkpointing: bool = True
    """Recompute each block's activations in backward (non-reentrant), as the paper's trainer does."""


@dataclass(frozen=True)
class DataSection:
    cache: str = "cache"
    """Latent cache folder written by ``prepare``."""
    batch_size: int = 64
    """Global batch (samples per optimiser step over all processes); the paper's is 64."""
    micro_batch: int | None = None
    """Samples per forward on one process (default: batch_size / processes); smaller means gradient accumulation."""
    full_caption_prob: float = 0.3
    """Probability of the full caption ``en_long[0] + " " + en_long[1]`` instead of the dynamic part only."""
    empty_text_prob: float = 0.1
    """Probability of the empty prompt (classifier-free guidance dropout); conditions are never dropped."""
    fixed_batch: bool = False
    """Repeat the first batch every step (overfitting checks)."""


@dataclass(frozen=True)
class OptimSection:
    lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    eps: float = 1e-8
    clip: float = 1.0
    """Gradient-norm clip (over all shards)."""
    warmup_steps: int = 100
    """Linear warm-up from 0, then constant."""


@dataclass(frozen=True)
class FlowSection:
    shift: float = 5.0
    """Timestep shift of training (5 for Wan2.2-TI2V-5B)."""
    quantize_timestep: bool = True
    """Feed the DiT ``model_timestep(t, compute dtype)`` (the authors' ``.to(dtype).long()``) as inference does;
    noise levels stay exact."""


@dataclass(frozen=True)
class ForcingSection:
    chunk_frames: int = 3
    """Latent frames per chunk (3 in the paper); the video's latent frames must be a multiple."""
    attention: str = "auto"
    """``auto`` (FlexAttention block mask on CUDA when available, else SDPA boolean mask), ``flex`` or ``sdpa``."""


@dataclass(frozen=True)
class DMDSection:
    """GR-DMD settings (the stage is :mod:`chameleon_core.training.stage_dmd`); the generator uses ``optim``."""

    teacher: str | None = None
    """SFT teacher weights: the frozen real score and the critic's initialisation."""
    critic_lr: float = 4e-7
    critic_per_generator: int = 5
    """Critic updates per generator update."""
    ema_decay: float = 0.99
    ema_start: int = 200
    tau: float = 0.2
    guidance: float = 3.0
    t_min: float = 20.0
    t_max: float = 980.0
    denoise_steps: int = 4
    chunk_frames: int = 3
    reward: str = "random"
    """Aesthetic reward: a folder with the CLIP ViT-L/14 and LAION MLP files, or ``random`` (tests)."""
    negative_prompt: str = ""
    extra: dict = field(default_factory=dict)
    """Further stage-specific settings, read by the DMD stage."""


@dataclass(frozen=True)
class RunSection:
    out: str = "runs/train"
    """Run folder: ``metrics.jsonl``, ``checkpoints/``, ``export/``."""
    steps: int = 1000
    """Optimiser steps in total."""
    save_every: int = 250
    """Checkpoint every N steps (and at the end)."""
    log_every: int = 1
    seed: int = 0
    resume: bool = True
    """Continue from the run folder's latest checkpoint when there is one."""
    stop_after: int | None = None
    """Stop (with a checkpoint) after this many steps of this invocation: simulates an interruption."""
    export: bool = True
    """Write the final weights through :func:`chameleon_core.checkpoints.save_transformer`."""
    export_dtype: str = "bf16"
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``."""


@dataclass(frozen=True)
class TrainConfig:
    stage: str = "sft"
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    optim: OptimSection = OptimSection()
    flow: FlowSection = FlowSection()
    forcing: ForcingSection = ForcingSection()
    dmd: DMDSection = DMDSection()
    run: RunSection = RunSection()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown config key(s) {[f'{where}{k}' for k in unknown]}; valid: {sorted(names)}")
    kwargs = {}
    for k, v in values.items():
        hint = hints[k]
        if dataclasses.is_dataclass(hint):
            if not isinstance(v, dict):
                raise ValueError(f"config section {where}{k} must be an object, got {v!r}")
            v = _build(hint, v, f"{where}{k}.")
        elif typing.get_origin(hint) is tuple and isinstance(v, list):
            v = tuple(v)
        elif hint is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        kwargs[k] = v
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    cfg = _build(TrainConfig, values, "")
    if cfg.stage not in STAGES:
        raise ValueError(f"config stage must be one of {STAGES}, got {cfg.stage!r}")
    return cfg


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def _read(source: str | Path) -> dict[str, Any]:
    path = Path(source)
    if not path.suffix and not path.exists():
        path = PRESET_DIR / f"{source}.json"
        if not path.exists():
            raise FileNotFoundError(f"no config file or preset named {source!r}; presets: {preset_names()}")
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}; pass a JSON file or one of {preset_names()}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"config {path} is not valid JSON ({e}); fix the file") from None


def apply_override(values: dict[str, Any], item: str) -> None:
    """Apply ``a.b=value`` to a nested dict in place (value parsed as JSON, else kept as a string)."""
    if "=" not in item:
        raise ValueError(f"override must look like section.key=value, got {item!r}")
    key, raw = item.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    parts = key.strip().split(".")
    node = values
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {item!r}: {p!r} is not a section")
    node[parts[-1]] = value


def load_config(source: str | Path, overrides: list[str] | tuple[str, ...] = (), stage: str | None = None) -> TrainConfig:
    """Load a config file or preset, apply ``--set`` overrides; ``stage`` (from the command) wins over the file's."""
    values = _read(source)
    for item in overrides:
        apply_override(values, item)
    if stage is not None:
        values["stage"] = stage
    return config_from_dict(values)
