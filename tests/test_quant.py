"""fp8 weight storage: close to the full-precision model, half the block-weight memory, layout unchanged."""

from __future__ import annotations

import copy

import torch

from chameleon_core.config import preset
from chameleon_core.model import WanModel
from tests.tiny_models import tiny_transformer
from chameleon_core.quant import quantize_blocks_fp8_, weight_bytes


def test_fp8_blocks_track_the_full_precision_model():
    ref = tiny_transformer(0)
    q = quantize_blocks_fp8_(copy.deepcopy(ref), torch.float32)
    assert q.blocks[0].ffn[0].weight.dtype == torch.float8_e4m3fn and q.dtype == torch.float32
    assert q.state_dict().keys() == ref.state_dict().keys()
    linear_bytes = lambda m: sum(  # noqa: E731
        layer.weight.numel() * layer.weight.element_size()
        for layer in m.blocks.modules() if isinstance(layer, torch.nn.Linear)
    )
    assert linear_bytes(q) * 4 == linear_bytes(ref)  # fp32 -> fp8 block weights
    assert weight_bytes(q) < weight_bytes(ref)
    x = torch.randn(1, 48, 2, 4, 4)
    ctx = torch.randn(1, 5, 64)
    t = torch.tensor([600.0])
    with torch.no_grad():
        want, got = ref(x, t, ctx), q(x, t, ctx)
    rel = (got - want).norm() / want.norm()
    assert rel < 0.05, f"fp8 relative error {rel:.4f}"
    assert rel > 0  # it really is quantised


def test_fp8_with_bf16_compute():
    torch.manual_seed(0)
    m = quantize_blocks_fp8_(WanModel(preset("tiny")).eval(), torch.bfloat16)
    assert m.dtype == torch.bfloat16 and m.patch_embedding.weight.dtype == torch.bfloat16
    with torch.no_grad():
        out = m(torch.randn(1, 48, 1, 4, 4), torch.tensor([500.0]), torch.randn(1, 3, 64))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
