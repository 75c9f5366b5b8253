"""Load a Wan DiT checkpoint of any released layout (:mod:`.layouts`) into :class:`~chameleon_core.model.WanModel`.

The architecture comes from the tensor shapes (:func:`infer_config`), so pruned, distilled and tiny models load as
well as the presets, which are recognised by shape. The prompt length is not in the shapes: it comes from the
``fashionchameleon.text_len`` metadata when present, else 512 (every released Wan).

Memory: the model is built on the meta device and each tensor is read, converted to the compute dtype and moved to
the device on its own (:func:`~.tensors.read_as`), so host RAM holds the converted model plus one tensor in flight,
never two copies of the weights.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from ..config import HEAD_DIM, WanConfig, match_preset
from ..model import WanModel
from .errors import CheckpointError, check_device, load_errors
from .files import SHOW, resolve_checkpoint_files
from .layouts import BLOCK_RE, TRAINING_KEYS, Renamed, detect_layout, rename
from .lora import LoRA, check_lora_fits, merging_transform, read_lora
from .metadata import DEFAULT_TEXT_LEN, check_format_version, text_len_from_metadata
from .tensors import FiniteCheck, TensorSource, first_names, open_source, read_as

logger = logging.getLogger(__name__)

COMPUTE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
"""Dtypes the model can run in; fp8 checkpoints are dequantized into one of these."""

_EXPECTED = "a state dict, or a training checkpoint with 'generator' / 'generator_ema' entries"


def open_transformer_source(files: Sequence[Path], which: str | None = None, prefer: str | None = None
                            ) -> TensorSource:
    """A tensor source over a transformer checkpoint (training ``.pt`` files: ``prefer`` first if it is there, then
    ``generator_ema``, then ``generator``)."""
    order = tuple(dict.fromkeys([*([prefer] if prefer else []), *TRAINING_KEYS, "state_dict"]))
    return open_source(files, which, preferred=order, expected=_EXPECTED)


# ---------------------------------------------------------------------------------------------------------------
# Architecture from shapes
# ---------------------------------------------------------------------------------------------------------------


def infer_config(shapes: Mapping[str, Sequence[int]], *, text_len: int | None = None) -> WanConfig:
    """A :class:`WanConfig` from tensor shapes in the original Wan names; named after the preset it matches.

    ``num_heads`` is ``dim / 128`` (every released Wan). ``text_len`` is not stored in the shapes: pass it (the
    loader takes it from the checkpoint's metadata); by default it is 512, whatever preset the shapes match.
    """

    def shape(name: str, ndim: int) -> tuple[int, ...]:
        if name not in shapes:
            raise CheckpointError(
                f"cannot infer the architecture: the checkpoint has no {name!r}, which every Wan DiT has; "
                f"first keys: {first_names(sorted(shapes))}. Pass a complete Wan transformer checkpoint"
            )
        s = tuple(int(x) for x in shapes[name])
        if len(s) != ndim:
            raise CheckpointError(f"shape mismatch for {name!r}: expected a {ndim}-d tensor, got shape {list(s)}")
        return s

    dim, in_dim, *patch = shape("patch_embedding.weight", 5)
    ffn_dim, _ = shape("blocks.0.ffn.0.weight", 2)
    _, text_dim = shape("text_embedding.0.weight", 2)
    _, freq_dim = shape("time_embedding.0.weight", 2)
    head_out, _ = shape("head.head.weight", 2)
    layers = sorted({int(m.group(1)) for k in shapes if (m := BLOCK_RE.match(k))})
    if layers != list(range(len(layers))):
        gaps = sorted(set(range(layers[-1] + 1)) - set(layers))
        raise CheckpointError(
            f"the checkpoint's blocks are not numbered 0..N-1: found {len(layers)} blocks up to {layers[-1]}, "
            f"missing blocks {gaps[:SHOW]}; the file is incomplete (a missing shard?). Download it again"
        )
    if dim % HEAD_DIM:
        raise CheckpointError(
            f"cannot infer the number of heads: dim={dim} is not a multiple of the head dim {HEAD_DIM} that every "
            "released Wan uses; this loader only reads Wan DiTs with 128-wide heads"
        )
    n_patch = math.prod(patch)
    if head_out % n_patch:
        raise CheckpointError(
            f"shape mismatch for 'head.head.weight': its {head_out} rows are not a multiple of the patch volume "
            f"{n_patch} (patch {tuple(patch)}); the checkpoint is inconsistent"
        )
    if text_len is not None and (isinstance(text_len, bool) or not isinstance(text_len, int) or text_len < 1):
        raise CheckpointError(f"text_len must be a whole number >= 1 (prompt tokens), got {text_len!r}; Wan uses 512")
    config = WanConfig(
        dim=dim,
        ffn_dim=ffn_dim,
        num_heads=dim // HEAD_DIM,
        num_layers=len(layers),
        in_dim=in_dim,
        out_dim=head_out // n_patch,
        text_dim=text_dim,
        freq_dim=freq_dim,
        text_len=DEFAULT_TEXT_LEN if text_len is None else text_len,
        patch_size=tuple(patch),
        qk_norm="blocks.0.self_attn.norm_q.weight" in shapes,
        cross_attn_norm="blocks.0.norm3.weight" in shapes,
    )
    # The preset name is a label for the shapes only: a checkpoint shaped like ``tiny`` keeps its own text_len.
    return match_preset(config)


# ---------------------------------------------------------------------------------------------------------------
# Checking a checkpoint before reading its weights
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint holds, read from its headers only (no weights)."""

    files: tuple[Path, ...]
    """The files read (several for a sharded checkpoint)."""
    layout: str
    """One of :data:`~.layouts.LAYOUTS`."""
    config: WanConfig
    """The architecture, named after its preset or ``custom``; ``text_len`` from the metadata, else 512."""
    stored_dtype: torch.dtype
    """The dtype holding most of the weights (float8_e4m3fn for scaled fp8)."""
    num_params: int
    """Parameters of the model built from it."""
    state_dict: str | None = None
    """For a training checkpoint: the entry loaded (``generator_ema`` or ``generator``)."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    """The safetensors ``__metadata__`` (of the first shard); empty for ``.pt`` files."""


@dataclass(frozen=True)
class _Plan:
    info: CheckpointInfo
    renamed: Renamed


def _plan(source: TensorSource, files: Sequence[Path], text_len: int | None) -> _Plan:
    """Check names and shapes against the inferred architecture before a byte of weights is read."""
    shapes = source.shapes()
    layout = detect_layout(list(shapes))
    if source.which in TRAINING_KEYS and layout == "wan":
        layout = "training"  # a generator state dict saved without the wrapper's prefix
    renamed = rename(shapes, layout)
    model_shapes = {name: shapes[e.raw] for name, e in renamed.entries.items()}
    check_format_version(source.metadata, source.description)
    if text_len is None:
        text_len = text_len_from_metadata(source.metadata, source.description)
    config = infer_config(model_shapes, text_len=text_len)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in WanModel(config).state_dict().items()}
    missing = sorted(set(expected) - set(model_shapes))
    unexpected = sorted([renamed.entries[k].raw for k in set(model_shapes) - set(expected)] + renamed.unexpected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys the model needs: {missing[:SHOW]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys the model does not have: {unexpected[:SHOW]}")
        raise CheckpointError(
            f"checkpoint does not match a Wan DiT of the shape it implies (layout {layout}, {config.name}, "
            f"dim={config.dim}, {config.num_layers} layers): {'; '.join(parts)}. The file may be incomplete, from a "
            "different model family, or carry extra modules (LoRA, adapters); pass a plain Wan transformer checkpoint"
        )
    for name, want in expected.items():
        got = tuple(model_shapes[name])
        if got != want:
            raw = renamed.entries[name].raw
            stored = f" (stored as {raw!r})" if raw != name else ""
            raise CheckpointError(
                f"shape mismatch for {name!r}{stored}: expected {list(want)} for the architecture inferred from the "
                f"other tensors ({config.name}, dim={config.dim}, ffn_dim={config.ffn_dim}), got {list(got)}; "
                "the checkpoint is corrupt or mixes two models"
            )
    dtypes = source.dtypes()
    counts: Counter[torch.dtype] = Counter()
    for e in renamed.entries.values():
        counts[dtypes[e.raw]] += math.prod(shapes[e.raw])
    info = CheckpointInfo(
        files=tuple(files),
        layout=layout,
        config=config,
        stored_dtype=counts.most_common(1)[0][0],
        num_params=sum(math.prod(s) for s in expected.values()),
        state_dict=source.which,
        metadata=dict(source.metadata),
    )
    return _Plan(info, renamed)


def inspect_checkpoint(
    path: str | os.PathLike[str], *, which: str | None = None, text_len: int | None = None
) -> CheckpointInfo:
    """Layout, architecture and stored dtype of a checkpoint, with every name and shape checked; reads no weights."""
    files = resolve_checkpoint_files(path)
    with load_errors(path, "a Wan transformer checkpoint"), open_transformer_source(files, which) as source:
        return _plan(source, files, text_len).info


def read_state_dict_shapes(path: str | os.PathLike[str], *, which: str | None = None) -> dict[str, tuple[int, ...]]:
    """Every tensor name of a checkpoint, as stored (prefixes included), with its shape; reads no weights."""
    files = resolve_checkpoint_files(path)
    with load_errors(path, "a Wan transformer checkpoint"), open_transformer_source(files, which) as source:
        return dict(source.shapes())


def iter_checkpoint_tensors(
    path: str | os.PathLike[str], *, which: str | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(stored name, tensor)`` one at a time, in stored dtype on the CPU, in file order.

    Only the tensor being yielded is held (once the caller drops it, it is gone), so any checkpoint streams through
    with one tensor of extra memory. Works for every file :func:`~.files.resolve_checkpoint_files` accepts.
    """
    with open_transformer_source(resolve_checkpoint_files(path), which) as source:
        for name in source.order(source.shapes()):
            yield name, read_as(source, name)


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------


def _check_dtype(dtype: torch.dtype) -> None:
    if not isinstance(dtype, torch.dtype):
        raise TypeError(
            f"dtype must be a torch.dtype (one of {[str(d) for d in COMPUTE_DTYPES]}), got {dtype!r} of type "
            f"{type(dtype).__name__}; pass e.g. dtype=torch.bfloat16"
        )
    if dtype not in COMPUTE_DTYPES:
        raise CheckpointError(
            f"dtype must be one of {[str(d) for d in COMPUTE_DTYPES]} (the compute dtype; fp8 checkpoints are "
            f"dequantized into it), got {dtype!r}; use torch.bfloat16 on GPU or torch.float32 on CPU"
        )


def dequantize_scaled_fp8(weight: torch.Tensor, scale: torch.Tensor, name: str) -> torch.Tensor:
    """ComfyUI scaled fp8: the real weight is ``weight.float() * scale_weight`` (a scalar or one per output row)."""
    scale = scale.float()
    if scale.numel() == 1:
        scale = scale.reshape(())
    elif scale.numel() == weight.shape[0]:
        scale = scale.reshape(-1, *([1] * (weight.ndim - 1)))
    else:
        raise CheckpointError(
            f"scale_weight of {name!r} has shape {list(scale.shape)}, which fits neither a scalar nor one scale per "
            f"output row of the weight {list(weight.shape)}; the scaled-fp8 file is malformed"
        )
    return weight.float() * scale


def _iter_converted(
    source: TensorSource, renamed: Renamed, dtype: torch.dtype, device: torch.device,
    lora: LoRA | None = None, lora_scale: float = 1.0,
) -> Iterator[tuple[str, torch.Tensor]]:
    raw_to_name = {e.raw: name for name, e in renamed.entries.items()}
    finite = FiniteCheck()
    for raw in source.order(raw_to_name):
        name = raw_to_name[raw]
        entry = renamed.entries[name]
        transform = None
        if entry.scale is not None:
            scale = read_as(source, entry.scale, device=device)
            transform = partial(dequantize_scaled_fp8, scale=scale, name=name)
        if lora is not None:
            transform = merging_transform(lora, name, lora_scale, transform)
        t = read_as(source, raw, dtype=dtype, device=device, transform=transform)
        finite.add(raw, t)
        yield name, t
    finite.check(f"transformer checkpoint {source.description}", getattr(source, "file_of", None))


def _size(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e8 else f"{n / 1e6:.1f}M"


def load_transformer(
    path: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: torch.device | str = "cpu",
    which: str | None = None,
    text_len: int | None = None,
    lora: str | os.PathLike[str] | LoRA | None = None,
    lora_scale: float = 1.0,
    prefer: str | None = None,
) -> WanModel:
    """Load a Wan DiT from any supported layout (:mod:`.layouts`) into ``dtype`` on ``device``.

    ``path``: a checkpoint file, a sharded checkpoint's index json, or the folder holding either. ``which``: for a
    training ``.pt``, the state dict to load (default: ``generator_ema`` if present, else ``generator``).
    ``text_len``: prompt length the model pads to (default: the checkpoint's ``fashionchameleon.text_len``
    metadata, else 512 as for every released Wan). ``lora``: a LoRA file (LongLive's ``lora.pt``,
    :mod:`.lora`) merged into the weights as they load, ``W + lora_scale * B @ A`` (``lora_scale`` = alpha / rank:
    1 for both LongLive releases). ``prefer``: the state dict of a training ``.pt`` to take when it is there (a
    profile's ``weights_entry``), before ``generator_ema`` and ``generator``.

    Returns the model in eval mode with ``requires_grad`` off (turn it on to train). Every failure to read the file
    raises :class:`~.errors.CheckpointError` (a ValueError; :class:`~.errors.CheckpointNotFoundError`, also a
    FileNotFoundError, for a missing path), naming the file, what is wrong and the fix.
    """
    _check_dtype(dtype)
    device = check_device(device, f"the transformer {path}")
    files = resolve_checkpoint_files(path)
    adapter = read_lora(lora) if lora is not None and not isinstance(lora, LoRA) else lora
    with load_errors(path, "a Wan transformer checkpoint"), open_transformer_source(files, which, prefer) as source:
        plan = _plan(source, files, text_len)
        info = plan.info
        if adapter is not None:
            with torch.device("meta"):
                shapes = {k: tuple(v.shape) for k, v in WanModel(info.config).state_dict().items()}
            check_lora_fits(adapter, shapes, source.description)
            logger.info("merging the rank-%d LoRA %s (%d weights, scale %g) while loading", adapter.rank,
                        adapter.source, len(adapter.pairs), lora_scale)
        logger.info(
            "loading %s: layout %s%s, %s (dim %d, %d layers, %s params, text_len %d), stored %s -> %s on %s",
            source.description,
            info.layout,
            f" [{info.state_dict}]" if info.state_dict else "",
            info.config.name,
            info.config.dim,
            info.config.num_layers,
            _size(info.num_params),
            info.config.text_len,
            info.stored_dtype,
            dtype,
            device,
        )
        with torch.device("meta"):
            model = WanModel(info.config)
        state = dict(_iter_converted(source, plan.renamed, dtype, device, adapter, lora_scale))
    model.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # only a model change (a buffer outside the state dict) can cause this; name it for the developer
        raise RuntimeError(f"WanModel tensors not covered by its state dict stayed on the meta device: {left[:SHOW]}")
    return model.eval().requires_grad_(False)


__all__ = [
    "COMPUTE_DTYPES",
    "CheckpointInfo",
    "dequantize_scaled_fp8",
    "infer_config",
    "inspect_checkpoint",
    "iter_checkpoint_tensors",
    "load_transformer",
    "read_state_dict_shapes",
]
