"""The core's Wan forward over another implementation's modules: a :class:`ModuleView`.

A Wan DiT loaded elsewhere (ComfyUI's ``UNETLoader``, a GGUF loader, ...) has the official submodule names
(``blocks.N.self_attn.q``, ``head.modulation``, ...), but its layers cast, dequantise, patch (LoRA) and offload their
weights in their own ``forward``. A view is a :class:`~chameleon_core.model.WanModel` whose layers *are* those
modules: every linear / conv / norm layer is called as a module (:class:`~chameleon_core.precision.CalledLayer` where
the core would read the weight, fed the dtype the view's :class:`~chameleon_core.precision.Precision` decides: the
same policy object the core's own model follows), and the raw parameters (the blocks' and head's ``modulation``) are read through the
owner's module each call and brought to the compute device by a ``cast`` function the owner supplies (a LoRA patch may
replace the parameter object, so the view never keeps one). Everything else -- RoPE, the in-context conditions, the
KV-cache plans, the chunk step, rescheduling -- is the core's, unchanged.

The view holds no weights of its own and is never moved (``.to`` raises): the owner decides where weights live.
This module imports nothing outside PyTorch; the ComfyUI side (which MODEL, which device, which cast) is
``nodes/adapters/native.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .config import WanConfig
from .model import Block, CrossAttention, Head, SelfAttention, WanModel
from .precision import CalledLayer, Precision

ParamCast = Callable[[torch.Tensor, torch.dtype, torch.device], torch.Tensor]
"""``cast(parameter, dtype, device) -> tensor``: how the owner brings a raw parameter to the compute device."""


def plain_cast(p: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The default :data:`ParamCast`: ``p.to(device, dtype)``."""
    return p.to(device=device, dtype=dtype)


WAN_ATTRIBUTES = ("dim", "ffn_dim", "num_heads", "num_layers", "in_dim", "out_dim", "text_dim", "freq_dim",
                  "text_len", "patch_size", "eps", "qk_norm", "cross_attn_norm")


def config_of(source: nn.Module, name: str = "native") -> WanConfig:
    """The :class:`WanConfig` of a Wan DiT module that carries the official constructor's attributes (``dim``,
    ``num_heads``, ... as ComfyUI's ``WanModel`` does). Raises ValueError naming what is missing or unsupported."""
    missing = [a for a in WAN_ATTRIBUTES if not hasattr(source, a)]
    if missing or not hasattr(source, "blocks") or not hasattr(source, "head"):
        raise ValueError(f"{type(source).__name__} is not a Wan DiT (missing {missing or ['blocks/head']})")
    if getattr(source, "model_type", "t2v") != "t2v":
        raise ValueError(f"this Wan model is a {source.model_type!r} variant; FashionChameleon runs on text-to-video "
                         "Wan (Wan2.2-TI2V-5B or Wan2.1-T2V)")
    values = {a: getattr(source, a) for a in WAN_ATTRIBUTES}
    values["patch_size"] = tuple(values["patch_size"])
    return WanConfig(**values, name=name)


LayerFactory = Callable[[nn.Module], CalledLayer]
"""Wraps one of the owner's layers as a :class:`~chameleon_core.model.CalledLayer` (the view's dtype and cast rule)."""


class _ViewSelfAttention(SelfAttention):
    def __init__(self, source: nn.Module, num_heads: int, layer: LayerFactory) -> None:
        nn.Module.__init__(self)
        self.num_heads = num_heads
        for name in ("q", "k", "v", "o"):
            setattr(self, name, layer(getattr(source, name)))
        self.norm_q, self.norm_k = source.norm_q, source.norm_k


class _ViewCrossAttention(CrossAttention):
    __init__ = _ViewSelfAttention.__init__


class _ViewBlock(Block):
    def __init__(self, source: nn.Module, config: WanConfig, layer: LayerFactory, cast: ParamCast,
                 device: torch.device) -> None:
        nn.Module.__init__(self)
        object.__setattr__(self, "_source", source)  # not a child: the view owns no weights
        self._cast, self._device = cast, device
        self.norm1, self.norm2 = source.norm1, source.norm2  # no weights
        self.norm3 = layer(source.norm3)  # affine: fed its weight dtype where it does not cast
        self.self_attn = _ViewSelfAttention(source.self_attn, config.num_heads, layer)
        self.cross_attn = _ViewCrossAttention(source.cross_attn, config.num_heads, layer)
        self.ffn = nn.Sequential(layer(source.ffn[0]), source.ffn[1],
                                 layer(source.ffn[2]))

    @property
    def modulation(self) -> torch.Tensor:  # read through the owner each call (a patch may replace the parameter)
        return self._cast(self._source.modulation, torch.float32, self._device)


class _ViewHead(Head):
    def __init__(self, source: nn.Module, layer: LayerFactory, cast: ParamCast, device: torch.device) -> None:
        nn.Module.__init__(self)
        object.__setattr__(self, "_source", source)
        self._cast, self._device = cast, device
        self.norm = source.norm
        self.head = layer(source.head)

    @property
    def modulation(self) -> torch.Tensor:
        return self._cast(self._source.modulation, torch.float32, self._device)


class ModuleView(WanModel):
    """The core Wan DiT running on ``source``'s modules (see the module docstring).

    ``source``: a Wan DiT module with the official names and constructor attributes (:func:`config_of`);
    ``precision``: the view's policy: ``compute`` is the activations' and KV cache's dtype, ``layer_casts(module)``
    says whether a layer casts its weights to its input's dtype on this call (a layer that does not is fed its own
    weight dtype, as the owner's forward feeds it: e.g. ComfyUI's fp32 patch embedding in a bf16 model);
    ``device``: where the forward runs (the owner must have made the modules usable there, e.g. loaded or set up to
    stream their weights); ``cast``: how raw parameters reach ``device`` (:func:`plain_cast` by default).
    """

    def __init__(self, source: nn.Module, *, precision: Precision, device: torch.device | str,
                 cast: ParamCast = plain_cast, config: WanConfig | None = None) -> None:
        nn.Module.__init__(self)
        self.config = config if config is not None else config_of(source)
        device = torch.device(device)
        self._view_device = device
        self.precision = precision
        object.__setattr__(self, "source", source)

        def layer(inner: nn.Module) -> CalledLayer:
            return CalledLayer(inner, precision)

        self.patch_embedding = layer(source.patch_embedding)
        self.text_embedding = source.text_embedding
        self.time_embedding = nn.Sequential(layer(source.time_embedding[0]), nn.SiLU(),
                                            layer(source.time_embedding[2]))
        self.time_projection = nn.Sequential(nn.SiLU(), layer(source.time_projection[1]))
        self.blocks = nn.ModuleList([_ViewBlock(b, self.config, layer, cast, device) for b in source.blocks])
        self.head = _ViewHead(source.head, layer, cast, device)

    @property
    def device(self) -> torch.device:
        return self._view_device

    def _apply(self, fn, *args, **kwargs):
        raise RuntimeError("a ModuleView does not own its weights and is never moved; move or load its source "
                           "model instead (inside ComfyUI, model management does)")
