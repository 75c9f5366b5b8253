"""Weight-only fp8 storage for the transformer blocks (the loaders' ``fp8`` weight dtype).

Block linear weights are stored as ``float8_e4m3fn`` with one fp32 scale per tensor (``scale_weight``, the same
convention as ComfyUI's "scaled fp8" checkpoints) and upcast to the compute dtype by the model's precision policy
(:meth:`chameleon_core.precision.Precision.linear`), which this module sets (compute dtype, matmul mode). This halves the weights' memory against bf16 (5B: ~10 GB -> ~5 GB, which
leaves room for several KV caches on a 24 GB card). Embeddings, norms, modulation and the head stay in the compute
dtype: they are small and precision-sensitive. The KV cache is never fp8.

``matmul`` chooses how the linears run: ``"auto"`` runs them as scaled fp8 matmuls
(:func:`~chameleon_core.precision.fp8_linear`: activations quantised per tensor on the fly, the stored weight and its own
scale as is) on CUDA devices with fp8 tensor cores (compute capability 8.9+), and elsewhere upcasts the weight per
call (weight-only: memory halved, no speed-up); ``"scaled"`` forces the fp8 matmul (CPU too: tests); ``"off"``
(default, until the scaled path has been measured on a GPU) always upcasts.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from .model import WanModel
from .precision import FP8_DTYPES, FP8_MATMUL_MODES, Precision

logger = logging.getLogger(__name__)

FP8_MAX = float(torch.finfo(torch.float8_e4m3fn).max)  # 448


def fp8_scale(weight: torch.Tensor) -> torch.Tensor:
    """Per-tensor scale so that ``weight / scale`` fits e4m3's range (fp32 scalar)."""
    return (weight.detach().abs().amax().float() / FP8_MAX).clamp(min=1e-12)


def quantize_fp8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled e4m3 with one scale per tensor (ComfyUI's "scaled fp8"): ``(float8_e4m3fn weight, fp32 scalar scale)``
    with ``weight ~ q.float() * scale``. What :func:`quantize_linear_` stores and the scaled-fp8 writer writes."""
    scale = fp8_scale(weight)
    return (weight.detach().float() / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), scale.reshape(())


MATMUL_MODES = FP8_MATMUL_MODES


def quantize_linear_(layer: nn.Linear, compute_dtype: torch.dtype, scale: torch.Tensor | None = None) -> None:
    """Store ``layer``'s weight in fp8 in place (its bias in ``compute_dtype``). A given ``scale`` means the weight
    is already fp8 with that scale (a ComfyUI scaled-fp8 checkpoint): it is kept as is, not re-quantised. How the
    layer then runs is the model's precision policy's to say."""
    w = layer.weight.data
    if w.dtype in FP8_DTYPES:
        if scale is None:
            raise ValueError("an fp8 weight needs its scale_weight; the checkpoint is missing it")
        q = w
    else:
        q, scale = quantize_fp8(w)
    layer.weight = nn.Parameter(q, requires_grad=False)
    # Not persistent: state_dict() keeps the reference layout (names and shapes of the released checkpoints).
    layer.register_buffer("scale_weight", scale.float().reshape(()).to(q.device), persistent=False)
    if layer.bias is not None:
        layer.bias.data = layer.bias.data.to(compute_dtype)


def quantize_blocks_fp8_(model: WanModel, compute_dtype: torch.dtype = torch.bfloat16, matmul: str = "off"
                         ) -> WanModel:
    """Store every linear weight inside the transformer blocks as scaled fp8, everything else in ``compute_dtype``,
    and set the model's precision policy: compute in ``compute_dtype``, fp8 matmuls as ``matmul`` says."""
    if compute_dtype in FP8_DTYPES or not compute_dtype.is_floating_point:
        raise ValueError(f"compute dtype must be bf16, fp16 or fp32, got {compute_dtype}")
    policy = Precision(compute_dtype, fp8_matmul=matmul)  # checks both before any weight changes
    blocks = set()
    for block in model.blocks:
        for layer in block.modules():
            if isinstance(layer, nn.Linear):
                blocks.add(id(layer))
    for module in model.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            if id(module) in blocks and name == "weight":
                continue
            if p.dtype != compute_dtype:
                p.data = p.data.to(compute_dtype)
    for block in model.blocks:
        for layer in block.modules():
            if isinstance(layer, nn.Linear) and id(layer) in blocks:
                quantize_linear_(layer, compute_dtype)
    model.precision = policy
    logger.info("block weights stored in fp8 (e4m3, per-tensor scale), compute in %s", compute_dtype)
    return model


def weight_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())
