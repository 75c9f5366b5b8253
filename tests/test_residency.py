"""Device-memory policy for many live stream states: at most N caches on the accelerator, the rest on host."""

from __future__ import annotations

import gc

import pytest
import torch

from chameleon_core.config import StreamSettings, preset
from chameleon_core.model import WanModel
from chameleon_core.rescheduling import switch_garment
from chameleon_core.residency import CacheResidency, CacheBox
from chameleon_core.streaming import generate, start_stream


class FakeCache:
    """Stands in for a KVCache on an accelerator: records where its storage lives, nothing else."""

    nbytes = 1 << 20

    def __init__(self, device):
        self.device = torch.device(device)

    def to(self, device, non_blocking=False):
        return FakeCache(device)


def test_least_recently_used_caches_are_spilled_and_brought_back():
    res = CacheResidency(max_device_caches=2)
    gpu = torch.device("cuda", 0)
    boxes = [CacheBox(FakeCache(gpu), gpu, res) for _ in range(5)]
    for b in boxes:
        res.touch(b)
    assert [b.cache.device.type for b in boxes] == ["cpu", "cpu", "cpu", "cuda", "cuda"]
    assert res.resident() == 2
    # Using an old state brings it back and spills the now least recently used one.
    res.touch(boxes[0])
    assert [b.cache.device.type for b in boxes] == ["cuda", "cpu", "cpu", "cpu", "cuda"]
    # Dropped states stop counting.
    del boxes[4], b  # the loop variable still held the last box
    gc.collect()
    assert res.resident() == 1


def test_the_residency_manager_belongs_to_whoever_starts_the_stream():
    """A stream keeps the manager it was started with, and so does every state derived from it; a stream started
    without one gets its own (no process-wide manager: one caller's streams never spill another's)."""
    model = WanModel(preset("tiny")).eval()
    c = model.config.in_dim
    g = torch.Generator().manual_seed(0)
    ref, gar, gar2 = (torch.randn(1, c, 1, 4, 4, generator=g) for _ in range(3))
    ctx = torch.randn(1, 5, model.config.text_dim, generator=g)
    settings = StreamSettings(chunk_frames=1, cache_frames=5, steps=1)
    shared = CacheResidency()
    a = start_stream(model, context=ctx, reference=ref, garment=gar, settings=settings, residency=shared)
    b = switch_garment(generate(a, 1)[0], gar2, disentangle=False)
    assert a._box.residency is shared and b._box.residency is shared
    other = start_stream(model, context=ctx, reference=ref, garment=gar, settings=settings)
    assert other._box.residency is not shared and generate(other, 1)[0]._box.residency is other._box.residency


def test_cpu_streams_are_never_moved():
    res = CacheResidency(max_device_caches=1)
    boxes = [CacheBox(FakeCache("cpu"), torch.device("cpu"), res) for _ in range(3)]
    for b in boxes:
        res.touch(b)
    assert all(b.cache.device.type == "cpu" for b in boxes)


@pytest.mark.gpu
def test_chain_of_switches_keeps_device_memory_bounded_and_results_exact():
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = WanModel(preset("tiny")).to(device).eval()
    c = model.config.in_dim
    g = torch.Generator().manual_seed(0)
    ref, *garments = [torch.randn(1, c, 1, 8, 8, generator=g) for _ in range(7)]
    ctx = torch.randn(1, 5, model.config.text_dim, generator=g)
    stream = StreamSettings()
    residency = CacheResidency()
    state = start_stream(model, context=ctx, reference=ref, garment=garments[0], settings=stream, residency=residency)
    states = []
    for gar in garments[1:]:
        state, _ = generate(state, 3)
        state = switch_garment(state, gar, disentangle=False)
        states.append(state)
    assert residency.resident() <= residency.max_device_caches
    # A spilled state continues exactly as it would have on the device.
    first = states[0]
    assert first._box.cache.device.type == "cpu"
    a = generate(first, 3)[1]
    b = generate(first, 3)[1]
    assert torch.equal(a, b)
