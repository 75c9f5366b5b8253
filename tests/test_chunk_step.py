"""The shared chunk step: with gradient it computes the same values as without, and only its exit step carries
gradient to the weights (checked against an independent computation that runs only that step with gradient)."""

from __future__ import annotations

import pytest
import torch

from chameleon_core.attention import attention
from chameleon_core.cache import CacheGeometry, KVCache
from chameleon_core.causal import chunk_forward, prefill_conditions
from chameleon_core.chunk_step import denoise_chunk
from chameleon_core.config import StreamSettings
from chameleon_core.schedules import model_timestep, student_timesteps
from tests.tiny_models import tiny_transformer

H = W = 4
C_FRAMES = 2


def _setup(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = model.config.in_dim
    ref, gar = (torch.randn(1, c, 1, H, W, generator=g) for _ in range(2))
    ctx = torch.randn(1, 5, model.config.text_dim, generator=g)
    text = model.prepare_text(ctx)
    geometry = CacheGeometry(StreamSettings(chunk_frames=C_FRAMES, cache_frames=10), (H // 2) * (W // 2))
    cache = KVCache.empty(model.config, geometry)
    with torch.no_grad():
        prefill_conditions(model, cache, text, ref, gar)
        # One earlier chunk in the cache, so the step attends to history too.
        slots = cache.reserve(C_FRAMES, 2)
        chunk_forward(model, cache, text, torch.randn(1, c, C_FRAMES, H, W, generator=g), torch.zeros(1), slots)
    noises = [torch.randn(1, c, C_FRAMES, H, W, generator=g) for _ in range(4)]
    return ctx, cache, noises


class ConstantHistory:
    """Attends to the first ``tokens`` cached keys (constants) followed by the run's own keys."""

    def __init__(self, cache, tokens):
        self.k, self.v = cache.k[:, :, :tokens].clone(), cache.v[:, :, :tokens].clone()

    def attend(self, layer, q, k, v, backend=None):
        return attention(q, torch.cat([self.k[layer], k], 1), torch.cat([self.v[layer], v], 1))


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("exit_step", [0, 2, 3])
def test_gradient_mode_gives_the_same_values_and_reaches_weights_from_the_exit_step_only(exit_step):
    model = tiny_transformer(0)
    ts = student_timesteps(5.0)
    ctx, cache, noises = _setup(model)

    # 1. Without gradient.
    with torch.no_grad():
        text = model.prepare_text(ctx)
    plain_cache = cache.clone()
    slots = plain_cache.reserve(C_FRAMES, 4)
    with torch.no_grad():
        plain = denoise_chunk(model, plain_cache, text, slots, ts, lambda i: noises[i], exit_step=exit_step)

    # 2. With gradient at the exit step (the prompt prepared with gradient too, as training does).
    text = model.prepare_text(ctx)
    grad_cache = cache.clone()
    slots = grad_cache.reserve(C_FRAMES, 4)
    x0 = denoise_chunk(model, grad_cache, text, slots, ts, lambda i: noises[i], exit_step=exit_step, grad=True)
    assert x0.requires_grad
    torch.testing.assert_close(x0, plain, atol=1e-6, rtol=0)
    # The clean pass wrote the same (detached) keys either way.
    torch.testing.assert_close(grad_cache.k, plain_cache.k, atol=1e-6, rtol=0)
    assert not grad_cache.k.requires_grad
    model.zero_grad()
    x0.square().mean().backward()
    got = _grads(model)

    # 3. Independent: the exit step's input computed by hand without gradient, then one forward with gradient.
    ind_cache = cache.clone()
    slots = ind_cache.reserve(C_FRAMES, 4)
    x = noises[0]
    with torch.no_grad():
        text = model.prepare_text(ctx)
        for i in range(exit_step):
            t = torch.full((1,), float(model_timestep(ts[i], model.dtype)))
            x0_i = x - ts[i] / 1000 * chunk_forward(model, ind_cache, text, x, t, slots)
            s = ts[i + 1] / 1000
            x = (1 - s) * x0_i + s * noises[i + 1]
    model.zero_grad()
    text = model.prepare_text(ctx)
    t = torch.full((1, C_FRAMES), float(model_timestep(ts[exit_step], model.dtype)))
    # Attention over [constant keys of the conditions and the earlier chunk, this run's keys with gradient].
    v = model.forward_frames(x, t, 4, text, ConstantHistory(cache, 4 * (H // 2) * (W // 2)))
    want_x0 = x - ts[exit_step] / 1000 * v
    torch.testing.assert_close(want_x0.detach(), plain, atol=1e-6, rtol=0)
    want_x0.square().mean().backward()
    want = _grads(model)
    assert got.keys() == want.keys() and len(got) > 0
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-6, rtol=1e-4, msg=name)


def test_exit_step_out_of_range_is_refused():
    model = tiny_transformer(0)
    ctx, cache, noises = _setup(model)
    text = model.prepare_text(ctx)
    slots = cache.reserve(C_FRAMES, 4)
    with pytest.raises(ValueError, match="exit_step"):
        denoise_chunk(model, cache, text, slots, student_timesteps(5.0), lambda i: noises[i], exit_step=4)


def test_model_timestep_follows_the_authors_quantization():
    ts = student_timesteps(5.0)
    assert [model_timestep(t, torch.float32) for t in ts] == [1000, 937, 833, 625]
    assert [model_timestep(t, torch.bfloat16) for t in ts] == [1000, 936, 832, 624]
