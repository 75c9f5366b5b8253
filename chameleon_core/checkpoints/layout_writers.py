"""Writers of every transformer layout the loaders read (:mod:`.layouts`, read side: :mod:`.transformer`): the
other tools' files as those tools write them, for the tiny checkpoints (``tools/tiny_checkpoints.py``) and the tests.

Original Wan names, ComfyUI's ``model.diffusion_model.`` prefix and its scaled fp8 format, diffusers
``WanTransformer3DModel`` names, Self-Forcing-style training ``.pt`` files, the public causal students' ``.pt`` files
and LongLive's LoRA file. Our own export format (original names with FashionChameleon metadata) is written by
:func:`.save.save_transformer`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..config import WanConfig
from ..model import WanModel
from ..quant import quantize_fp8
from .layouts import (
    COMFY_PREFIX,
    DIFFUSERS_TO_WAN,
    DIFFUSERS_TO_WAN_BLOCK,
    LAYOUTS,
    SCALED_FP8_MARKER,
)
from .metadata import TEXT_LEN_METADATA_KEY

#: Original Wan module -> diffusers module: the inverse of the loader's table, so writer and reader share one source.
WAN_TO_DIFFUSERS = {v: k for k, v in DIFFUSERS_TO_WAN.items()}
WAN_TO_DIFFUSERS_BLOCK = {v: k for k, v in DIFFUSERS_TO_WAN_BLOCK.items()}


def _to_diffusers_name(name: str) -> str:
    parts = name.split(".")
    if parts[0] == "blocks":
        head, rest, table = f"blocks.{parts[1]}.", ".".join(parts[2:]), WAN_TO_DIFFUSERS_BLOCK
    else:
        head, rest, table = "", name, WAN_TO_DIFFUSERS
    for module in sorted(table, key=len, reverse=True):
        if rest == module or rest.startswith(module + "."):
            return head + table[module] + rest[len(module) :]
    raise KeyError(f"no diffusers name for {name!r}")


def _fsdp_name(name: str) -> str:
    """``blocks.3.self_attn.q.weight`` -> ``model._fsdp_wrapped_module.blocks.3._fsdp_wrapped_module.self_attn...``,
    as FSDP with one unit per block names it."""
    parts = name.split(".")
    if parts[0] == "blocks":
        parts.insert(2, "_fsdp_wrapped_module")
    return "model._fsdp_wrapped_module." + ".".join(parts)


def _state_dict(model_or_state_dict: WanModel | Mapping[str, torch.Tensor], dtype: torch.dtype | None) -> dict:
    sd = model_or_state_dict.state_dict() if isinstance(model_or_state_dict, torch.nn.Module) else model_or_state_dict
    out = {}
    for k, v in sd.items():
        v = v.detach().cpu()
        out[k] = (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
    return out


def write_transformer_checkpoint(
    model_or_state_dict: WanModel | Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    *,
    layout: str = "wan",
    dtype: torch.dtype | None = None,
    shards: int = 1,
    prefix: str | None = None,
    generator: WanModel | Mapping[str, torch.Tensor] | None = None,
    scale_input: bool = True,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a transformer (original Wan names, or its state dict) as a checkpoint in ``layout``; returns the path.

    - ``wan`` / ``comfyui`` / ``diffusers``: one safetensors file at ``path``; with ``shards > 1``, ``path`` is a
      folder that gets ``diffusion_pytorch_model-0000i-of-0000N.safetensors`` and the index json (whose path is
      returned). ``prefix`` overrides the layout's name prefix (e.g. ``"transformer."`` for diffusers).
    - ``comfyui-fp8``: every 2-d weight stored as float8_e4m3fn with a fp32 ``scale_weight`` (and a
      ``scale_input`` of 1 if ``scale_input``), plus the ``scaled_fp8`` marker; other tensors in ``dtype``.
    - ``training``: a ``.pt`` with ``generator_ema`` (this model) and ``generator`` (``generator``, default the same
      weights), names as FSDP writes them (``model._fsdp_wrapped_module.blocks.N._fsdp_wrapped_module...``).

    ``dtype`` casts floating tensors (default: as they are). ``metadata`` goes into each safetensors header; when a
    model (with its ``.config``) is given, its ``text_len`` is added as ``fashionchameleon.text_len`` unless
    ``metadata`` sets it, so tiny models keep their short prompt length. A ``.pt`` holds no metadata: it loads with
    the default prompt length (512).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {list(LAYOUTS)}")
    path = Path(path)
    config = getattr(model_or_state_dict, "config", None)
    if isinstance(config, WanConfig):
        metadata = {TEXT_LEN_METADATA_KEY: str(config.text_len), **(metadata or {})}
    sd = _state_dict(model_or_state_dict, dtype)
    if layout == "training":
        gen_sd = sd if generator is None else _state_dict(generator, dtype)
        torch.save(
            {
                "generator": {_fsdp_name(k): v for k, v in gen_sd.items()},
                "generator_ema": {_fsdp_name(k): v for k, v in sd.items()},
                "step": 400,
            },
            path,
        )
        return path
    if layout == "diffusers":
        out = {(prefix or "") + _to_diffusers_name(k): v for k, v in sd.items()}
    elif layout == "comfyui-fp8":
        pre = COMFY_PREFIX if prefix is None else prefix
        out = {}
        for k, v in sd.items():
            if k.endswith(".weight") and v.ndim == 2:
                base = k[: -len(".weight")]
                out[pre + k], out[pre + base + ".scale_weight"] = quantize_fp8(v)
                if scale_input:
                    out[pre + base + ".scale_input"] = torch.ones(())
            else:
                out[pre + k] = v
        out[pre + SCALED_FP8_MARKER] = torch.empty(0, dtype=torch.float8_e4m3fn)
    else:
        pre = (COMFY_PREFIX if layout == "comfyui" else "") if prefix is None else prefix
        out = {pre + k: v for k, v in sd.items()}
    if shards <= 1:
        save_file(out, str(path), metadata=dict(metadata) if metadata else None)
        return path
    path.mkdir(parents=True, exist_ok=True)
    names = list(out)
    per = math.ceil(len(names) / shards)
    weight_map = {}
    for i in range(shards):
        file = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        chunk = {k: out[k] for k in names[i * per : (i + 1) * per]}
        save_file(chunk, str(path / file), metadata=dict(metadata) if metadata else None)
        weight_map.update({k: file for k in chunk})
    index = path / "diffusion_pytorch_model.safetensors.index.json"
    total = sum(v.numel() * v.element_size() for v in out.values())
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return index


def write_generator_pt(
    path: str | os.PathLike[str],
    generator: WanModel | Mapping[str, torch.Tensor],
    *,
    ema: WanModel | Mapping[str, torch.Tensor] | None = None,
    extras: Mapping[str, object] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """A Self-Forcing-family ``.pt`` as the projects save it: ``{"generator": {"model.<name>": tensor}}`` (their
    ``WanDiffusionWrapper`` keeps the DiT as ``.model``), ``generator_ema`` beside it when given, and plain
    ``extras`` (LongLive 2.0's merged file: ``checkpoint_format``, ``model_name``, ...)."""
    path = Path(path)
    out: dict[str, object] = {"generator": {"model." + k: v for k, v in _state_dict(generator, dtype).items()}}
    if ema is not None:
        out["generator_ema"] = {"model." + k: v for k, v in _state_dict(ema, dtype).items()}
    out.update(extras or {})
    torch.save(out, path)
    return path


def write_lora_pt(path: str | os.PathLike[str], lora: Mapping[str, torch.Tensor], *, entry: bool = True) -> Path:
    """LongLive's LoRA checkpoint: ``{"generator_lora": peft state dict}`` (or the bare state dict)."""
    path = Path(path)
    torch.save({"generator_lora": dict(lora)} if entry else dict(lora), path)
    return path
