"""ChameleonNativeModel's refusals (a MODEL that is no Wan DiT, an unknown kind) and ComfyUI's attention as the core
backend, without ComfyUI: the adapter is called with stand-in objects (the real path runs in
``test_comfyui_native.py``)."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from comfyui_fashionchameleon.chameleon_core import attention as attn
from comfyui_fashionchameleon.chameleon_core.random_models import random_transformer
from comfyui_fashionchameleon.nodes.adapters.native import COMFY_ATTENTION, native_model
from comfyui_fashionchameleon.nodes.adapters.stream_start import start_node_stream


class FakePatcher:
    def __init__(self, diffusion_model) -> None:
        self.model = types.SimpleNamespace(diffusion_model=diffusion_model)
        self.load_device = torch.device("cpu")


def test_refuses_an_unknown_kind_and_a_non_model():
    with pytest.raises(ValueError, match=r"N: input 'kind' got 'vae': unknown model kind\. Fix: choose one of"):
        native_model("N", FakePatcher(None), "vae")
    with pytest.raises(ValueError, match=r"input 'model' got 'object': not a ComfyUI MODEL\. Fix: connect the MODEL"):
        native_model("N", object(), "student")


def test_refuses_a_model_that_is_not_a_text_to_video_wan():
    unet = torch.nn.Linear(2, 2)  # e.g. an SD UNet: no Wan attributes
    with pytest.raises(ValueError, match=r"input 'model' got 'Linear': Linear is not a Wan DiT .*Fix: load a "
                                         r"FashionChameleon Wan2.2"):
        native_model("N", FakePatcher(unet), "student")
    wan = random_transformer(seed=0)
    for name, value in vars(wan.config).items():
        if name != "name":
            object.__setattr__(wan, name, value)
    wan.model_type = "i2v"
    with pytest.raises(ValueError, match="'i2v' variant"):
        native_model("N", FakePatcher(wan), "student")


@pytest.fixture
def fake_comfy_attention(monkeypatch):
    """``comfy.ldm.modules.attention.optimized_attention`` as ComfyUI's attention_pytorch takes it (``[B, H, L, D]``
    with skip_reshape / skip_output_reshape), recording its calls."""
    calls = []

    def optimized_attention(q, k, v, heads, mask=None, skip_reshape=False, skip_output_reshape=False, **kwargs):
        assert skip_reshape and skip_output_reshape and q.shape[1] == heads
        calls.append(heads)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    module = types.ModuleType("comfy.ldm.modules.attention")
    module.optimized_attention = optimized_attention
    for name in ("comfy", "comfy.ldm", "comfy.ldm.modules"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "comfy.ldm.modules.attention", module)
    sys.modules["comfy.ldm.modules"].attention = module
    yield calls


@torch.no_grad()
def test_comfy_attention_is_the_models_backend_and_equals_the_core_path(fake_comfy_attention):
    """ComfyUI's attention is a property of the models the nodes hand the core, not a process-wide swap: another
    model in the same process keeps SDPA."""
    model, other = random_transformer(seed=2), random_transformer(seed=2)
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(1, model.config.in_dim, 2, 4, 4, generator=g), torch.randn(1, 5, model.config.text_dim,
                                                                                 generator=g)
    want = model(x, torch.tensor([400.0]), ctx)
    model.attention = COMFY_ATTENTION  # what the loaders and the native-MODEL view set
    got = model(x, torch.tensor([400.0]), ctx)
    assert fake_comfy_attention == [model.config.num_heads] * (2 * model.config.num_layers)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    other(x, torch.tensor([400.0]), ctx)
    assert len(fake_comfy_attention) == 2 * model.config.num_layers  # the other model: SDPA, as it was
    q = torch.randn(1, 6, 2, 8, generator=g)
    attn.attention(q, q, q, torch.ones(6, 6, dtype=torch.bool).tril(), COMFY_ATTENTION)  # masked: the core path
    assert len(fake_comfy_attention) == 2 * model.config.num_layers


def test_a_zero_shift_from_model_sampling_is_refused_naming_the_student():
    from comfyui_fashionchameleon.chameleon_core.config import StreamSettings

    student = types.SimpleNamespace(shift=0.0)
    with pytest.raises(ValueError, match=r"N: input 'student' got 'shift 0.0': shift must be a finite number > 0.*"
                                         r"Fix: set ModelSamplingSD3's shift above 0"):
        start_node_stream("N", student, None, None, seed=0, steps=4, chunk_frames=3, cache_frames=23,
                                   sink_chunks=1)
    assert StreamSettings().shift == 5.0
