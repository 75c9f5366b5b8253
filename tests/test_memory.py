"""Memory bounds (issue 13): the estimate refuses an oversized stream before allocating, and keep_history=False
keeps a long stream's host memory flat while giving bit-identical frames."""

from __future__ import annotations

import resource

import pytest
import torch

from chameleon_core import memory
from chameleon_core.config import StreamSettings
from chameleon_core.memory import MemoryBudgetError, estimate_stream_memory
from chameleon_core.rescheduling import switch_garment, switch_prompt
from chameleon_core.streaming import generate, start_stream
from tests.tiny_models import tiny_transformer

H = W = 4


@pytest.fixture(scope="module")
def model():
    return tiny_transformer(0)


@pytest.fixture
def inputs(model):
    g = torch.Generator().manual_seed(11)
    c = model.config.in_dim
    return dict(ref=torch.randn(1, c, 1, H, W, generator=g), gar=torch.randn(1, c, 1, H, W, generator=g),
                gar2=torch.randn(1, c, 1, H, W, generator=g), ctx=torch.randn(1, 5, model.config.text_dim, generator=g),
                ctx2=torch.randn(1, 6, model.config.text_dim, generator=g))  # fmt: skip


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def test_estimate_counts_cache_copies_activations_and_vae(model):
    s = StreamSettings()
    est = estimate_stream_memory(model.config, s, 880, dtype=torch.bfloat16, device="cuda")
    # Independent count: layers x (K and V) x slots x tokens x dim x 2 bytes, times the copy-on-write copy.
    cache = model.config.num_layers * 2 * 23 * 880 * model.config.dim * 2
    assert est.cache_bytes == cache and est.cache_copies == 2
    assert est.total >= 2 * cache + est.activation_bytes
    from chameleon_core.vae import VAE_PRESETS

    vae = memory.vae_decode_bytes(VAE_PRESETS["wan2.2"], 80, 44, 1, torch.bfloat16)
    assert 2.5e9 < vae < 8e9  # ~3 GiB of causal caches in bf16 at 1280x704 (the reference's figure) + one step


def test_oversized_stream_is_refused_before_allocating(model, inputs):
    # A 256x256 latent grid and a 1000-frame cache: 2 layers x 2 x 1000 x 16384 tokens x 256 x 4 bytes = 67 GB per
    # copy, more than this machine has. The check must refuse before the cache exists.
    big = torch.zeros(1, model.config.in_dim, 1, 256, 256)
    before = _rss_mib()
    with pytest.raises(MemoryBudgetError) as info:
        start_stream(model, context=inputs["ctx"], reference=big, garment=big,
                     settings=StreamSettings(cache_frames=1000))
    assert _rss_mib() - before < 200  # nothing of the 67 GB was allocated
    text = str(info.value)
    assert "GiB" in text and "free" in text and "cache_frames" in text and "resolution" in text
    assert isinstance(info.value, ValueError)  # the nodes and the command line catch ValueError


def test_budget_uses_the_free_memory_probe(model, inputs, monkeypatch):
    monkeypatch.setattr(memory, "host_available", lambda: 2**20)  # pretend 1 MiB is free
    refused = r"would need about .* GiB .* only 0\.00 GiB is free.*lower cache_frames"
    with pytest.raises(MemoryBudgetError, match=refused):
        start_stream(model, context=inputs["ctx"], reference=inputs["ref"], garment=inputs["gar"],
                     settings=StreamSettings(cache_frames=200))
    monkeypatch.setattr(memory, "host_available", lambda: None)  # unknown: the check is skipped, not guessed
    start_stream(model, context=inputs["ctx"], reference=inputs["ref"], garment=inputs["gar"])


@pytest.mark.parametrize("bad", [dict(cache_frames=1_000_000), dict(chunk_frames=0), dict(steps=2.5),
                                 dict(shift=float("nan")), dict(shift=0.0), dict(shift=-1.0)])  # fmt: skip
def test_settings_bounds(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=rf"{name} must be .*got"):
        StreamSettings(**bad)


def _state_bytes(state) -> tuple[int, int]:
    """Host tensors a state holds besides its cache: (count, bytes)."""
    return len(state.history), sum(t.numel() * t.element_size() for t in state.history)


def test_keep_history_false_is_flat_and_bit_identical(model, inputs):
    settings = dict(chunk_frames=2, cache_frames=2 + 2 + 4, sink_chunks=1, steps=2)
    full = start_stream(model, context=inputs["ctx"], reference=inputs["ref"], garment=inputs["gar"], seed=4,
                        settings=StreamSettings(**settings))
    lean = start_stream(model, context=inputs["ctx"], reference=inputs["ref"], garment=inputs["gar"], seed=4,
                        settings=StreamSettings(**settings, keep_history=False))
    sizes = []
    outs_full, outs_lean = [], []
    for _ in range(6):  # 6 segments of 4 chunks: 48 latent frames, far past the 6-frame window
        full, a = generate(full, 8)
        lean, b = generate(lean, 8)
        outs_full.append(a)
        outs_lean.append(b)
        sizes.append(_state_bytes(lean))
    assert torch.equal(torch.cat(outs_full, 2), torch.cat(outs_lean, 2))  # bit-identical frames
    assert lean.latent_frames == full.latent_frames == 48
    assert sizes[1:] == sizes[1:2] * (len(sizes) - 1)  # flat: same tensor count and bytes every segment
    assert sizes[-1][0] <= 4  # the sink chunk + the 2 window chunks (+ the last, already among them)
    assert _state_bytes(full)[0] == 24
    with pytest.raises(ValueError, match="keep_history=False.*keep_history=True"):
        lean.latents()
    # A prompt switch re-caches the frames still in the cache: the same as with the full history.
    pf, pl = switch_prompt(full, inputs["ctx2"]), switch_prompt(lean, inputs["ctx2"])
    assert torch.equal(generate(pf, 4)[1], generate(pl, 4)[1])
    # A garment switch with the frame the session decoded (or a new reference) works on a trimmed stream.
    frame = torch.zeros(1, 3, 64, 64)
    with pytest.raises(ValueError, match="last_frame"):
        switch_garment(lean, inputs["gar2"], codec=object())
    ref = torch.randn_like(inputs["ref"])
    gf = switch_garment(full, inputs["gar2"], new_reference=ref)
    gl = switch_garment(lean, inputs["gar2"], new_reference=ref)
    assert torch.equal(generate(gf, 4)[1], generate(gl, 4)[1])
    del frame
