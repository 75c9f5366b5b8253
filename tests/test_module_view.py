"""The core forward over another implementation's modules (ModuleView) and the one attention backend hook.

The view's outputs are compared with the core model's own forward on the same weights; a foreign source stores its
weights in another representation (scaled, as quantised loaders do) and casts them in its own forward.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from chameleon_core import attention as attn
from chameleon_core.config import StreamSettings
from chameleon_core.module_view import ModuleView, config_of
from chameleon_core.precision import Precision
from chameleon_core.streaming import generate, start_stream
from tests.tiny_models import tiny_transformer

H = W = 4


@pytest.fixture(scope="module")
def model():
    return tiny_transformer(3)


@pytest.fixture
def inputs(model):
    g = torch.Generator().manual_seed(1)
    c = model.config.in_dim
    return {"x": torch.randn(1, c, 2, H, W, generator=g), "ref": torch.randn(1, c, 1, H, W, generator=g),
                "gar": torch.randn(1, c, 1, H, W, generator=g), "ctx": torch.randn(1, 5, model.config.text_dim, generator=g)}


class HalvedLinear(nn.Module):
    """A foreign linear layer: stores ``weight / 2`` plus a scale, rebuilds the weight per call in
    the input's dtype (as ComfyUI's cast ops / quantised loaders do)."""

    def __init__(self, layer: nn.Linear) -> None:
        super().__init__()
        self.stored = nn.Parameter(layer.weight.detach() / 2, requires_grad=False)
        self.scale = 2.0
        self.bias = nn.Parameter(layer.bias.detach().clone(), requires_grad=False)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return nn.functional.linear(x, (self.stored * self.scale).to(x.dtype), self.bias.to(x.dtype))


def foreign_copy(model):
    """A deep copy of ``model`` whose every block linear is a :class:`HalvedLinear`."""
    other = copy.deepcopy(model)
    for block in other.blocks:
        for owner in (block.self_attn, block.cross_attn):
            for name in ("q", "k", "v", "o"):
                setattr(owner, name, HalvedLinear(getattr(owner, name)))
        block.ffn[0], block.ffn[2] = HalvedLinear(block.ffn[0]), HalvedLinear(block.ffn[2])
    return other


@torch.no_grad()
def test_view_equals_the_core_model_on_the_same_weights(model, inputs):
    view = ModuleView(model, precision=Precision(torch.float32), device="cpu", config=model.config)
    t = torch.tensor([700.0])
    want = model(inputs["x"], t, inputs["ctx"], reference=inputs["ref"], garment=inputs["gar"])
    got = view(inputs["x"], t, inputs["ctx"], reference=inputs["ref"], garment=inputs["gar"])
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert {id(p) for p in view.parameters()} <= {id(p) for p in model.parameters()}  # no weights of its own


@torch.no_grad()
def test_view_streams_a_foreign_source_like_the_core_model(model, inputs):
    other = foreign_copy(model)
    view = ModuleView(other, precision=Precision(torch.float32), device="cpu", config=model.config)
    settings = StreamSettings(chunk_frames=1, cache_frames=5, sink_chunks=1, steps=2)
    outs = []
    for m in (model, view):
        state = start_stream(m, context=inputs["ctx"], reference=inputs["ref"], garment=inputs["gar"], seed=5,
                             settings=settings)
        outs.append(generate(state, 3)[1])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    assert other.blocks[0].self_attn.q.calls > 0  # the foreign modules ran, as modules


@torch.no_grad()
def test_view_reads_a_replaced_modulation_through_its_owner(model, inputs):
    other = copy.deepcopy(model)
    view = ModuleView(other, precision=Precision(torch.float32), device="cpu", config=model.config)
    changed = copy.deepcopy(model)
    changed.blocks[1].modulation.add_(0.3)
    changed.head.modulation.sub_(0.2)
    # A patcher replaces parameter objects (not their data): the view must follow the owner, not keep the old one.
    other.blocks[1].modulation = nn.Parameter(changed.blocks[1].modulation.detach().clone())
    other.head.modulation = nn.Parameter(changed.head.modulation.detach().clone())
    t = torch.tensor([500.0])
    torch.testing.assert_close(view(inputs["x"], t, inputs["ctx"]), changed(inputs["x"], t, inputs["ctx"]),
                               rtol=0, atol=0)


def test_view_is_never_moved_and_config_of_names_what_is_missing(model):
    view = ModuleView(model, precision=Precision(torch.float32), device="cpu", config=model.config)
    with pytest.raises(RuntimeError, match="never moved"):
        view.to(torch.float64)
    with pytest.raises(ValueError, match=r"not a Wan DiT \(missing \['dim'"):
        config_of(model)


def test_view_config_from_native_attributes(model):
    source = copy.deepcopy(model)
    cfg = model.config
    for name in ("dim", "ffn_dim", "num_heads", "num_layers", "in_dim", "out_dim", "text_dim", "freq_dim", "text_len",
                 "patch_size", "eps", "qk_norm", "cross_attn_norm"):
        object.__setattr__(source, name, getattr(cfg, name))
    assert config_of(source) == cfg
    source.model_type = "i2v"
    with pytest.raises(ValueError, match="'i2v' variant"):
        config_of(source)


# ---------------------------------------------------------------------------------------------------------------
# The attention backend: a property of the model
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def recording():
    calls = []

    def record(q, k, v, mask):
        calls.append(mask)
        # an independent computation: explicit softmax attention, [B, L, H, D]
        scores = torch.einsum("blhd,bmhd->bhlm", q.float(), k.float()) / q.shape[-1] ** 0.5
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.einsum("bhlm,bmhd->blhd", scores.softmax(-1), v.float()).to(q.dtype)

    yield attn.AttentionBackend(record, name="record"), calls


@torch.no_grad()
def test_the_models_backend_runs_every_attention_and_matches_the_core_path(model, inputs, recording):
    backend, calls = recording
    t = torch.tensor([700.0])
    want = model(inputs["x"], t, inputs["ctx"], reference=inputs["ref"], garment=inputs["gar"])
    other = copy.deepcopy(model)
    other.attention = backend
    got = other(inputs["x"], t, inputs["ctx"], reference=inputs["ref"], garment=inputs["gar"])
    assert len(calls) == 2 * model.config.num_layers  # self + cross attention of every block
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    model(inputs["x"], t, inputs["ctx"], reference=inputs["ref"], garment=inputs["gar"])
    assert len(calls) == 2 * model.config.num_layers and model.attention is attn.SDPA  # no other model changed


@torch.no_grad()
def test_a_backend_without_masks_gets_only_unmasked_calls(recording):
    backend, calls = recording
    backend = attn.AttentionBackend(backend.fn, takes_mask=False)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 6, 2, 8, generator=g) for _ in range(3))
    mask = torch.ones(6, 6, dtype=torch.bool).tril()
    masked = attn.attention(q, k, v, mask, backend)
    assert calls == []  # the masked call took the core path
    sdpa = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                            attn_mask=mask).transpose(1, 2)
    torch.testing.assert_close(masked, sdpa)
    attn.attention(q, k, v, None, backend)
    assert calls == [None]


@torch.no_grad()
def test_layers_that_do_not_cast_are_fed_their_own_weight_dtype(model, inputs):
    """A bf16 source whose layers run as they are (ComfyUI's plain layers of a fully loaded bf16 model: no weight
    casting) with an fp32 patch embedding (as ComfyUI builds it): each layer is fed its own weight dtype, so the view
    runs and agrees with the fp32 model to bf16 precision. Feeding the view's dtype everywhere failed on the first
    forward ("Input type (BFloat16) and bias type (float) should be the same")."""
    source = copy.deepcopy(model).to(torch.bfloat16)
    source.patch_embedding.float()
    view = ModuleView(source, precision=Precision(torch.bfloat16, layer_casts=lambda m: False), device="cpu",
                      config=model.config)
    t = torch.tensor([700.0])
    want = model(inputs["x"], t, inputs["ctx"], reference=inputs["ref"], garment=inputs["gar"])
    got = view(inputs["x"], t, inputs["ctx"], reference=inputs["ref"], garment=inputs["gar"])
    assert torch.isfinite(got).all()
    err = (got.float() - want).abs().max() / want.abs().max()
    assert err < 0.05, float(err)
    casting = ModuleView(source, precision=Precision(torch.bfloat16, layer_casts=lambda m: True), device="cpu",
                         config=model.config)  # every layer claims to cast: the old behaviour, which fails
    with pytest.raises(RuntimeError):
        casting(inputs["x"], t, inputs["ctx"], reference=inputs["ref"], garment=inputs["gar"])


def test_one_precision_policy_drives_the_model_and_the_view(model):
    """The core model and the native-MODEL view decide every cast from one Precision object: the view's layers hold
    the view's policy, fp8 storage sets the model's (no per-layer copy of the compute dtype or the matmul mode)."""
    from chameleon_core.precision import CalledLayer
    from chameleon_core.quant import quantize_blocks_fp8_

    policy = Precision(torch.float32, layer_casts=lambda m: True)
    view = ModuleView(model, precision=policy, device="cpu", config=model.config)
    called = [m for m in view.modules() if isinstance(m, CalledLayer)]
    assert called and all(m.precision is policy for m in called) and view.precision is policy
    fp8 = quantize_blocks_fp8_(copy.deepcopy(model), torch.bfloat16, matmul="scaled")
    assert fp8.precision == Precision(torch.bfloat16, fp8_matmul="scaled") and fp8.dtype == torch.bfloat16
    assert not hasattr(fp8.blocks[0].self_attn.q, "compute_dtype") and not hasattr(fp8.blocks[0].ffn[0], "fp8_matmul")
    assert model.precision == Precision(torch.float32)  # an unquantised model computes in its weight dtype
    with pytest.raises(ValueError, match="fp8 matmul must be one of"):
        Precision(torch.float32, fp8_matmul="fast")
