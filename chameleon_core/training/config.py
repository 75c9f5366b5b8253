"""Training configuration: one frozen :class:`TrainConfig` with a section per concern, loaded from JSON.

A config file is JSON with the sections below (every field optional; defaults are the paper's 5B values where the
paper gives one). Presets ship as files in ``chameleon_core/training/presets/`` (``sft_5b``, ``forcing_5b``,
``dmd_5b`` and ``tiny_*``); ``--config NAME`` picks a preset, ``--config PATH.json`` a file. Overrides
``--set section.field=value`` take JSON values (``--set optim.lr=2e-5``, ``--set optim.betas=[0,0.999]``) and
fall back to a string (``--set run.out=runs/x``); a text field keeps the text as given (``--set run.out=2024``).

Every value is checked when the config is loaded, before anything starts: its type (a number where a number is
due, ``true``/``false`` for switches), that it is finite (no NaN / inf), and its range (:data:`RULES`: positive step
counts, probabilities in 0..1, Adam betas in [0, 1), known dtypes and architectures ...). Every problem is reported at
once by one :class:`ConfigError` that names each key, the value received, where it came from (the file or the
``--set``) and the fix.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chameleon_core.config import PRESETS as ARCHITECTURES

PRESET_DIR = Path(__file__).resolve().parent / "presets"
STAGES = ("sft", "forcing", "dmd")
DTYPE_NAMES = ("bf16", "fp16", "fp32")
"""Dtype names of ``model.param_dtype``, ``model.reduce_dtype`` and ``run.export_dtype``."""
AUTOCAST_NAMES = ("off", "bf16", "auto")
"""Values of ``model.autocast`` (``auto``: bf16 where the run's device multiplies bf16 natively, else off)."""
DEVICES = ("auto", "cpu", "cuda")
ATTENTION = ("auto", "flex", "sdpa")
SEED_MAX = 2**63 - 1
"""Largest seed (``torch.manual_seed`` and numpy take it); seeds are whole numbers 0..SEED_MAX."""


class ConfigError(ValueError):
    """A config that cannot be trained: each line names a key, the value received, where it came from and the fix."""


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
    autocast: str = "off"
    """Without FSDP: run every forward under ``torch.autocast`` in this dtype (``bf16``: the linears in bf16, and the
    attention on CUDA; the residual stream, norms, modulation, timestep layers and CPU attention in fp32; fp32 master
    weights and gradients), ``off`` (fp32 throughout), or ``auto``: bf16 where the device multiplies bf16 in hardware
    (:func:`chameleon_core.precision.native_bf16`: a bf16 GPU, a CPU with AVX-512 BF16 or AMX), else off -- on a CPU
    without them PyTorch emulates bf16 products, 60x slower than fp32 on a 2-core AVX2 machine. Under FSDP
    ``param_dtype`` decides instead (``auto`` is then off). (No fp16: it would need loss scaling.)"""
    compile: bool = False
    """Without FSDP: compile each DiT block with ``torch.compile`` (the module stays the same, so checkpoints and
    exports keep their keys). The first step pays the compile (about 15 s for the CPU world's blocks); on the 2-core
    CPU a world SFT step then takes 0.054 s against 0.064 s (in the world's full run 0.052 against 0.061), a
    teacher-forcing step 0.091 s against 0.112 s measured alone (in the full run no faster). Meant for the stages whose
    shapes repeat step after step (SFT, teacher forcing); GR-DMD's rollouts grow the KV cache chunk by chunk and would
    recompile. On CPU it needs a C++ compiler (``g++``/``clang++``; ``CXX`` names another)."""


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


DECAYS = ("constant", "cosine", "linear")
"""Learning-rate shapes after the warm-up (``optim.decay``)."""


@dataclass(frozen=True)
class OptimSection:
    lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    eps: float = 1e-8
    clip: float = 1.0
    """Gradient-norm clip (over all shards)."""
    warmup_steps: int = 100
    """Linear warm-up from 0, then :attr:`decay`."""
    decay: str = "constant"
    """After the warm-up: ``constant`` (the authors' schedule), or ``cosine`` / ``linear`` from lr down to
    ``lr * min_lr_ratio`` at ``run.steps`` (the stage's last step; DMD counts its generator updates)."""
    min_lr_ratio: float = 0.0
    """Where ``cosine`` and ``linear`` end, as a fraction of lr."""


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
    position_offset_max: int = 0
    """RoPE position jitter, in latent frames: each step the clip's chunks after the first sit a random whole number
    of chunks (0 .. this) later than the authors' fixed positions (the conditions and the first chunk, a stream's
    sink, keep theirs), so a stream that runs longer than the training clip denoises at positions, and with a sink
    at a distance, the student has trained at. 0: fixed positions."""
    self_reference: float = 0.0
    """Probability that a sample's reference is replaced by one the student made itself, as a garment switch's
    disentangled reference is made (:func:`~chameleon_core.training.stage_forcing.self_made_references`): the
    student, without gradient, draws the reference's pose in another sample's garment (its first latent frame),
    which is decoded and re-encoded as a one-frame latent with ``self_reference_vae``. 0: the dataset's
    references only (the authors')."""
    self_reference_vae: str | None = None
    """The VAE file (the one the latent cache was prepared with) that decodes and re-encodes the self-made
    references; required when ``self_reference`` > 0."""


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
    self_reference: float = 0.0
    """Probability that a sample's reference is replaced, for the iteration, by one the generator made itself as a
    garment switch's disentangled reference is made
    (:func:`~chameleon_core.training.self_reference.redrawn_references`, over the process's batch): the rollouts,
    the teacher's score and the critic then all see the clip after a switch. 0: the dataset's references (the
    authors')."""
    self_reference_vae: str | None = None
    """The VAE file (the one the latent cache was prepared with) that decodes and re-encodes the self-made
    references; required when ``self_reference`` > 0."""
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


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _random_spec_ok(v: str | None) -> bool:
    """``None``, a path, or ``random:SEED`` with a whole-number seed."""
    if v is None or not v.startswith("random:"):
        return True
    seed = v.split(":", 1)[1]
    return seed.isdigit() and int(seed) <= SEED_MAX


Rule = tuple[Callable[[Any], bool], str]
RULES: dict[str, Rule] = {
    "model.arch": (lambda v: v in ARCHITECTURES, f"one of the architectures {sorted(ARCHITECTURES)}"),
    "model.init": (_random_spec_ok, "a checkpoint path, or random:SEED with a whole-number seed"),
    "model.text_len": (lambda v: v is None or v >= 1, "a whole number of tokens >= 1, or null for the architecture's"),
    "model.param_dtype": (lambda v: v in DTYPE_NAMES, f"one of {list(DTYPE_NAMES)}"),
    "model.reduce_dtype": (lambda v: v in DTYPE_NAMES, f"one of {list(DTYPE_NAMES)}"),
    "model.autocast": (lambda v: v in AUTOCAST_NAMES, f"one of {list(AUTOCAST_NAMES)}"),
    "data.batch_size": (lambda v: v >= 1, "a whole number of samples >= 1"),
    "data.micro_batch": (lambda v: v is None or v >= 1, "a whole number >= 1 that divides the per-process batch, or null"),
    "data.full_caption_prob": (lambda v: 0 <= v <= 1, "a probability in 0..1"),
    "data.empty_text_prob": (lambda v: 0 <= v <= 1, "a probability in 0..1"),
    "optim.lr": (lambda v: v > 0, "a learning rate > 0"),
    "optim.betas": (lambda v: all(0 <= b < 1 for b in v), "two Adam betas, each 0 <= beta < 1"),
    "optim.weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "optim.eps": (lambda v: v > 0, "a number > 0"),
    "optim.clip": (lambda v: v > 0, "a gradient-norm bound > 0"),
    "optim.warmup_steps": (lambda v: v >= 0, "a whole number of steps >= 0"),
    "optim.decay": (lambda v: v in DECAYS, f"one of {', '.join(DECAYS)}"),
    "optim.min_lr_ratio": (lambda v: 0 <= v <= 1, "a fraction in 0..1"),
    "flow.shift": (lambda v: v > 0, "a timestep shift > 0"),
    "forcing.chunk_frames": (lambda v: v >= 1, "a whole number of latent frames >= 1"),
    "forcing.attention": (lambda v: v in ATTENTION, f"one of {list(ATTENTION)}"),
    "forcing.position_offset_max": (lambda v: v >= 0, "a whole number of latent frames >= 0"),
    "forcing.self_reference": (lambda v: 0 <= v <= 1, "a probability in 0..1"),
    "dmd.self_reference": (lambda v: 0 <= v <= 1, "a probability in 0..1"),
    "dmd.teacher": (_random_spec_ok, "a checkpoint path, or random:SEED with a whole-number seed"),
    "dmd.critic_lr": (lambda v: v > 0, "a learning rate > 0"),
    "dmd.critic_per_generator": (lambda v: v >= 1, "a whole number >= 1 (critic updates per generator update)"),
    "dmd.ema_decay": (lambda v: 0 <= v <= 1, "a decay in 0..1"),
    "dmd.ema_start": (lambda v: v >= 0, "a whole number of iterations >= 0"),
    "dmd.tau": (lambda v: v > 0, "a softmax temperature > 0"),
    "dmd.guidance": (lambda v: v >= 0, "a guidance scale >= 0"),
    "dmd.t_min": (lambda v: 0 <= v <= 1000, "a timestep in 0..1000"),
    "dmd.t_max": (lambda v: 0 <= v <= 1000, "a timestep in 0..1000"),
    "dmd.denoise_steps": (lambda v: v >= 1, "a whole number of steps >= 1"),
    "dmd.chunk_frames": (lambda v: v >= 1, "a whole number of latent frames >= 1"),
    "run.steps": (lambda v: v >= 1, "a whole number of optimiser steps >= 1"),
    "run.save_every": (lambda v: v >= 1, "a whole number of steps >= 1"),
    "run.log_every": (lambda v: v >= 1, "a whole number of steps >= 1"),
    "run.seed": (lambda v: 0 <= v <= SEED_MAX, f"a whole number in 0..{SEED_MAX}"),
    "run.stop_after": (lambda v: v is None or v >= 1, "a whole number of steps >= 1, or null"),
    "run.export_dtype": (lambda v: v in DTYPE_NAMES, f"one of {list(DTYPE_NAMES)}"),
    "run.device": (lambda v: v in DEVICES, f"one of {list(DEVICES)}"),
}
"""What each checked value must be (after its type is checked): ``key -> (test, what it must be)``."""


@dataclass
class _Origin:
    """Where the values of a config came from, for the messages: the file, and the ``--set`` of each key."""

    file: str = "the config"
    overrides: dict[str, str] = field(default_factory=dict)

    def of(self, key: str) -> str:
        for k in (key, *[key.rsplit(".", i)[0] for i in range(1, key.count(".") + 1)]):
            if k in self.overrides:
                return f"from --set {self.overrides[k]}"
        return f"in {self.file}"

    def fix(self, key: str, example: Any) -> str:
        shown = json.dumps(example) if not isinstance(example, str) else example
        if key in self.overrides or not self.file.endswith(".json"):
            return f"e.g. --set {key}={shown}"
        return f"fix it in {self.file} (e.g. {shown}) or override it with --set {key}=..."


EXAMPLES: dict[str, str] = {"model.init": "PATH (or random:0 for a test run)",
                            "dmd.teacher": "PATH (or random:1 for a test run)"}
"""Examples for the fix of keys whose default is no example."""


def _default(key: str) -> Any:
    if key in EXAMPLES:
        return EXAMPLES[key]
    node: Any = TrainConfig()
    for part in key.split("."):
        node = getattr(node, part, None)
    if isinstance(node, tuple):
        return list(node)
    return node


def _coerce(value: Any, hint: Any, key: str, problems: list[str], origin: _Origin) -> Any:
    """``value`` as the field's type (ints for floats, lists for tuples); records a problem and returns ``value``
    when it is not of the type (or not finite)."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional, hint = len(args) < len(typing.get_args(hint)), args[0]
        if value is None and optional:
            return None

    def bad(what: str) -> Any:
        example = _default(key)
        if example is None:
            example = {int: 1, float: 1.0, str: "..."}.get(hint, "...")
        problems.append(f"{key} = {value!r} ({origin.of(key)}): must be {what}{' or null' if optional else ''}; "
                        f"{origin.fix(key, example)}")
        return value

    if hint is bool:
        return value if isinstance(value, bool) else bad("true or false")
    if hint is int:
        if _is_number(value) and math.isfinite(value) and float(value).is_integer():
            return int(value)
        return bad("a whole number")
    if hint is float:
        if not _is_number(value):
            return bad("a number")
        if not math.isfinite(value):
            return bad("a finite number (not NaN or infinity)")
        return float(value)
    if hint is str:
        return value if isinstance(value, str) else bad("text (a JSON string)")
    if hint is dict:
        return value if isinstance(value, dict) else bad("a JSON object")
    if typing.get_origin(hint) is tuple:
        n = len(typing.get_args(hint))
        if not isinstance(value, (list, tuple)) or len(value) != n or not all(_is_number(v) for v in value):
            return bad(f"a list of {n} numbers")
        if not all(math.isfinite(v) for v in value):
            return bad(f"a list of {n} finite numbers (not NaN or infinity)")
        return tuple(float(v) for v in value)
    return value


def _build(cls: type, values: dict[str, Any], where: str, problems: list[str], origin: _Origin) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    for k in unknown:
        problems.append(f"unknown config key {where + k!r} ({origin.of(where + k)}); valid keys"
                        f"{' of ' + where[:-1] if where else ''}: {names}")
    kwargs = {}
    for k, v in values.items():
        if k in unknown:
            continue
        hint = hints[k]
        if dataclasses.is_dataclass(hint):
            if not isinstance(v, dict):
                problems.append(f"config section {where}{k} must be a JSON object of keys, got {v!r} "
                                f"({origin.of(where + k)}); set its keys one by one, e.g. --set {where}{k}.KEY=VALUE")
                continue
            kwargs[k] = _build(hint, v, f"{where}{k}.", problems, origin)
        else:
            kwargs[k] = _coerce(v, hint, f"{where}{k}", problems, origin)
    return cls(**kwargs)


def _check_rules(cfg: TrainConfig, problems: list[str], origin: _Origin, skip: set[str]) -> None:
    for key, (test, what) in RULES.items():
        if key in skip:
            continue
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        value = list(value) if isinstance(value, tuple) else value
        try:
            ok = bool(test(value))
        except TypeError:  # a value of the wrong type, already reported
            continue
        if not ok:
            problems.append(f"{key} = {value!r} ({origin.of(key)}): must be {what}; {origin.fix(key, _default(key))}")
    d = cfg.dmd
    if _is_number(d.t_min) and _is_number(d.t_max) and d.t_min >= d.t_max:
        problems.append(f"dmd.t_min = {d.t_min} is not below dmd.t_max = {d.t_max} ({origin.of('dmd.t_min')}); the "
                        "DMD timesteps are drawn between them: e.g. --set dmd.t_min=20 --set dmd.t_max=980")
    if cfg.model.fsdp is True and cfg.model.autocast == "bf16":
        problems.append(f"model.autocast = {cfg.model.autocast!r} with model.fsdp = true ({origin.of('model.autocast')}): "
                        "FSDP computes in model.param_dtype; use --set model.autocast=off (and model.param_dtype), "
                        "or --set model.fsdp=false for one process")
    if cfg.model.fsdp is True and cfg.model.compile is True:
        problems.append(f"model.compile = true with model.fsdp = true ({origin.of('model.compile')}): the trainer "
                        "compiles blocks only without FSDP (its FSDP units sit inside the blocks); use --set "
                        "model.compile=false, or --set model.fsdp=false for one process")
    mb, bs = cfg.data.micro_batch, cfg.data.batch_size
    if isinstance(mb, int) and isinstance(bs, int) and mb > bs >= 1:
        problems.append(f"data.micro_batch = {mb} is larger than data.batch_size = {bs} ({origin.of('data.micro_batch')}); "
                        f"use a micro-batch that divides the per-process batch, e.g. --set data.micro_batch=1")


def _config(values: dict[str, Any], origin: _Origin) -> TrainConfig:
    if not isinstance(values, dict):
        raise ConfigError(f"{origin.file} must hold a JSON object of config sections, got {type(values).__name__}; "
                          f"see chameleon_core/training/presets/ for examples")
    problems: list[str] = []
    cfg = _build(TrainConfig, values, "", problems, origin)
    if cfg.stage not in STAGES:
        problems.append(f"config stage must be one of {STAGES}, got {cfg.stage!r} ({origin.of('stage')})")
    _check_rules(cfg, problems, origin, skip={p.split(" ", 1)[0] for p in problems})
    if problems:
        head = "the training config cannot be used" if len(problems) > 1 else "bad training config"
        raise ConfigError(head + ": " + problems[0] if len(problems) == 1 else
                          head + f" ({len(problems)} problems):\n" + "\n".join(f"  - {p}" for p in problems))
    return cfg


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """A checked :class:`TrainConfig` from a dict of sections (raises :class:`ConfigError`)."""
    return _config(values, _Origin())


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def config_path(source: str | Path) -> Path:
    """The file of ``--config``: the path itself, or the preset of that name."""
    path = Path(source).expanduser()
    if not path.suffix and not path.exists():
        preset_file = PRESET_DIR / f"{source}.json"
        if not preset_file.exists():
            raise ConfigError(f"--config {source!r}: no config file or preset of that name; pass a JSON file or one of "
                              f"the presets {preset_names()}")
        return preset_file
    if path.is_dir():
        raise ConfigError(f"--config {source}: is a folder, not a config file; pass a JSON file or one of the presets "
                          f"{preset_names()}")
    if not path.exists():
        raise ConfigError(f"--config {source}: config file not found (absolute: {path.resolve()}); pass a JSON file or "
                          f"one of the presets {preset_names()}")
    return path


def _read(path: Path) -> Any:
    from chameleon_core.checkpoints.errors import CheckpointError, check_regular_file

    try:
        check_regular_file(path, "config file", "pass a JSON config file or a preset name")
        text = path.read_text(encoding="utf-8")
    except CheckpointError as e:
        raise ConfigError(f"--config: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config {path} is not UTF-8 text ({e.reason} at byte {e.start}); pass a JSON config "
                          "file") from None
    if not text.strip():
        raise ConfigError(f"config {path} is empty; write the JSON config (see chameleon_core/training/presets/) or "
                          f"pass a preset: {preset_names()}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"config {path} is not valid JSON ({e}); fix the file") from None


def _field_hint(parts: list[str]) -> Any:
    """The type of the config field at ``parts`` (None past a dict field such as ``dmd.extra``); raises
    :class:`ConfigError` for a key that is not a field."""
    cls: Any = TrainConfig
    for i, p in enumerate(parts):
        if cls is dict:
            return None
        names = [f.name for f in dataclasses.fields(cls)]
        if p not in names:
            prefix = ".".join(parts[:i])
            raise ConfigError(f"unknown config key {'.'.join(parts)!r}: {prefix or 'the config'} has no {p!r}; valid "
                              f"keys{' of ' + prefix if prefix else ''}: {names}")
        cls = typing.get_type_hints(cls)[p]
    return cls


def _is_text_field(hint: Any) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return str in typing.get_args(hint)
    return hint is str


def apply_override(values: dict[str, Any], item: str) -> str:
    """Apply ``a.b=value`` to a nested dict in place; returns the key. The value is parsed as JSON (else kept as
    text); a text field keeps the text as given (``run.out=2024`` stays ``"2024"``) unless it is JSON ``null`` or a
    quoted string. Raises :class:`ConfigError` for a malformed item or a key that is not a config field."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r} is not KEY=VALUE; write it like --set optim.lr=2e-5 (KEY is section.field)")
    key, raw = item.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not key or not all(parts):
        raise ConfigError(f"--set {item!r}: {key!r} is not a config key; write it like --set optim.lr=2e-5")
    hint = _field_hint(parts)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    if _is_text_field(hint) and value is not None and not isinstance(value, str):
        value = raw
    node = values
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {item!r}: {p!r} is not a section of the config")
    node[parts[-1]] = value
    return key


def load_config(source: str | Path, overrides: list[str] | tuple[str, ...] = (), stage: str | None = None) -> TrainConfig:
    """Load a config file or preset, apply ``--set`` overrides; ``stage`` (from the command) wins over the file's.
    Raises :class:`ConfigError` naming every problem (see the module docstring)."""
    path = config_path(source)
    values = _read(path)
    origin = _Origin(str(path))
    if not isinstance(values, dict):
        raise ConfigError(f"config {path} must hold a JSON object of sections, got {type(values).__name__}; see "
                          "chameleon_core/training/presets/ for examples")
    for item in overrides:
        key = apply_override(values, item)
        origin.overrides[key] = item
    if stage is not None:
        values["stage"] = stage
    return _config(values, origin)
