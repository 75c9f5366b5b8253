"""Each public student's profile streams exactly as that project's own inference loop.

The pack's stream (``start_stream`` / ``generate`` / ``switch_prompt`` under the profile's settings) is compared,
over at least 10 blocks on tiny random weights, with an independent re-implementation of the project's loop
(``tests/reference_loops.py``: its own Wan forward, KV bookkeeping and schedulers, written from the project's
repository). Then one rule at a time is perturbed on the pack's side (window, sink, timestep, RoPE offset) and the
equality must break: the comparison can fail.

Noise: both sides take the same noise tensors, drawn from one CPU generator chunk by chunk and step by step (the
pack's documented order); the projects draw theirs from the CUDA RNG, which no test can replay.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from chameleon_core import rope as rope_module
from chameleon_core.config import WanConfig
from chameleon_core.profiles import PROFILES
from chameleon_core.rescheduling import switch_prompt
from chameleon_core.streaming import generate, start_stream
from chameleon_core.random_models import random_transformer
from tests import reference_loops as ref

pytest.importorskip("diffusers")  # LongLive 2.0's reference UniPC

TOL = 1e-4
"""Largest relative difference (max |a - b| / max |b|) of two equal streams."""
BROKEN = 1e-3
"""Smallest relative difference a perturbed rule must make."""
LATENT = 8
"""Latent height and width (16 tokens a frame)."""


def tiny_config(channels: int) -> WanConfig:
    return WanConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=2, in_dim=channels, out_dim=channels, text_dim=64,
                     text_len=16, name="tiny")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def noise_table(seed: int, blocks: int, draws: int, shape: tuple[int, ...]) -> list[list[torch.Tensor]]:
    """The noise the pack draws for ``blocks`` chunks: ``draws`` tensors per chunk ``[B, C, F, h, w]``, in order."""
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(shape, generator=gen) for _ in range(draws)] for _ in range(blocks)]


def as_ref_noise(table):
    """The same noise in the projects' layout ``[B, F, C, H, W]``."""
    return lambda block, step: table[block][step].permute(0, 2, 1, 3, 4)


def pack_stream(name: str, model, prompts: list[torch.Tensor], shots: list[bool], seed: int, *,
                first_frame: torch.Tensor | None = None, **changes) -> torch.Tensor:
    """The pack's stream of ``len(prompts)`` chunks under the profile (``changes`` perturb its settings); a prompt
    that differs from the previous chunk's is a prompt switch at that boundary (``shots[i]``: a new shot). Returns
    ``[B, F, C, H, W]``."""
    prof = PROFILES[name]
    tpf = (LATENT // 2) ** 2
    settings = prof.settings_for(tpf, **changes)
    state = start_stream(model, context=prompts[0], seed=seed, settings=settings, latent_size=(LATENT, LATENT),
                         first_frame=None if first_frame is None else first_frame.permute(0, 2, 1, 3, 4))
    out, run = [], 0
    for i in range(1, len(prompts) + 1):
        if i == len(prompts) or prompts[i] is not prompts[i - 1]:
            state, lat = generate(state, (i - run) * settings.chunk_frames)
            out.append(lat)
            run = i
            if i < len(prompts):
                state = switch_prompt(state, prompts[i], new_shot=shots[i])
    return torch.cat(out, dim=2).permute(0, 2, 1, 3, 4)


@pytest.fixture(scope="module")
def wan21():
    return random_transformer(tiny_config(16), seed=3)


@pytest.fixture(scope="module")
def wan22():
    return random_transformer(tiny_config(48), seed=4)


def _prompts(n: int, switches: dict[int, int], seed: int = 0) -> list[torch.Tensor]:
    """``n`` per-chunk prompts: prompt 0 from the start, prompt ``p`` from chunk ``c`` for each ``c: p``."""
    gen = torch.Generator().manual_seed(seed)
    pool = [torch.randn(1, 7, 64, generator=gen) for _ in range(1 + max(switches.values(), default=0))]
    out, current = [], pool[0]
    for i in range(n):
        current = pool[switches[i]] if i in switches else current
        out.append(current)
    return out


# -- Self-Forcing: 3-frame blocks, global causal attention over the rollout, warped 4 steps --------------------


def self_forcing_case(model, **changes):
    prompts, seed, blocks = _prompts(11, {}), 11, 11
    table = noise_table(seed, blocks, 4, (1, 16, 3, LATENT, LATENT))
    grid = ref.Grid(1, 16, LATENT, LATENT, 16)
    expected = ref.self_forcing_loop(model, prompts, as_ref_noise(table), grid)
    return pack_stream("self_forcing", model, prompts, [False] * blocks, seed, **changes), expected


def test_self_forcing_matches_its_loop(wan21):
    got, expected = self_forcing_case(wan21)
    assert got.shape == expected.shape == (1, 33, 16, LATENT, LATENT)
    assert rel(got, expected) <= TOL


@pytest.mark.slow  # a check that the comparison can fail; the full suite runs it
@pytest.mark.parametrize("change", [{"cache_frames": 21}, {"cache_frames": 21, "sink_chunks": 1},
                                    {"student_timesteps": (1000, 750, 500, 249)}, {"shift": 4.0}],
                         ids=["window", "sink", "timestep", "shift"])
def test_self_forcing_perturbed_breaks(wan21, change):
    got, expected = self_forcing_case(wan21, **change)
    assert rel(got, expected) > BROKEN


# -- CausVid: unwarped steps [1000, 757, 522] with sigma from the shift-8 table, global attention -----------------


def causvid_case(model, **changes):
    prompts, seed, blocks = _prompts(10, {}), 12, 10
    table = noise_table(seed, blocks, 3, (1, 16, 3, LATENT, LATENT))
    expected = ref.causvid_loop(model, prompts, as_ref_noise(table), ref.Grid(1, 16, LATENT, LATENT, 16))
    return pack_stream("causvid", model, prompts, [False] * blocks, seed, **changes), expected


def test_causvid_matches_its_loop(wan21):
    got, expected = causvid_case(wan21)
    assert got.shape == expected.shape == (1, 30, 16, LATENT, LATENT)
    assert rel(got, expected) <= TOL


@pytest.mark.slow  # a check that the comparison can fail; the full suite runs it
@pytest.mark.parametrize("change", [{"cache_frames": 21}, {"student_timesteps": (1000, 750, 522)},
                                    {"warp": True}],
                         ids=["window", "timestep", "warp"])
def test_causvid_perturbed_breaks(wan21, change):
    got, expected = causvid_case(wan21, **change)
    assert rel(got, expected) > BROKEN


# -- LongLive 1.0: 3-frame blocks, window 12 with a 3-frame sink, prompt switches with its re-cache ---------------


def longlive1_case(model, **changes):
    # Switches at chunk 2 (6 frames: everything cached is re-encoded) and chunk 7 (21 frames: the sink keeps its keys).
    prompts, seed, blocks = _prompts(12, {2: 1, 7: 2}), 13, 12
    table = noise_table(seed, blocks, 4, (1, 16, 3, LATENT, LATENT))
    expected = ref.longlive1_loop(model, prompts, as_ref_noise(table), ref.Grid(1, 16, LATENT, LATENT, 16))
    return pack_stream("longlive1", model, prompts, [False] * blocks, seed, **changes), expected


def test_longlive1_matches_its_loop(wan21):
    got, expected = longlive1_case(wan21)
    assert got.shape == expected.shape == (1, 36, 16, LATENT, LATENT)
    assert rel(got, expected) <= TOL


@pytest.mark.slow  # a check that the comparison can fail; the full suite runs it
@pytest.mark.parametrize("change", [{"cache_frames": 15}, {"sink_chunks": 0}, {"shift": 4.0},
                                    {"prompt_recache": "chunks"}],
                         ids=["window", "sink", "timestep", "recache"])
def test_longlive1_perturbed_breaks(wan21, change):
    got, expected = longlive1_case(wan21, **change)
    assert rel(got, expected) > BROKEN


# -- LongLive 2.0: 8-frame blocks, UniPC, window 32 with an 8-frame sink, shots (RoPE offset, pinned shot sink) ---


def longlive2_case(model, *, image: bool = False, **changes):
    # A plain prompt change at chunk 2, new shots at chunks 5 and 8 (the first is evicted behind the second).
    prompts, seed, blocks = _prompts(11, {2: 1, 5: 2, 8: 3}), 14, 11
    shots = [i in (5, 8) for i in range(blocks)]
    table = noise_table(seed, blocks, 1, (1, 48, 8, LATENT, LATENT))
    first = torch.randn(1, 1, 48, LATENT, LATENT, generator=torch.Generator().manual_seed(5)) if image else None
    expected = ref.longlive2_loop(model, prompts, shots, as_ref_noise(table), ref.Grid(1, 48, LATENT, LATENT, 16),
                                  first_frame=first)
    got = pack_stream("longlive2", model, prompts, shots, seed, first_frame=first, **changes)
    return got, expected


@pytest.mark.parametrize("image", [False, True], ids=["t2v", "i2v"])
def test_longlive2_matches_its_loop(wan22, image):
    got, expected = longlive2_case(wan22, image=image)
    assert got.shape == expected.shape == (1, 88, 48, LATENT, LATENT)
    assert rel(got, expected) <= TOL
    if image:
        assert torch.equal(got[:, :1], expected[:, :1])


@pytest.mark.slow  # a check that the comparison can fail; the full suite runs it
@pytest.mark.parametrize("change", [{"cache_frames": 40}, {"sink_chunks": 2}, {"shot_sink": False},
                                    {"steps": 3}, {"shot_rope_offset": 7}],
                         ids=["window", "sink", "shot-sink", "timestep", "rope-offset"])
def test_longlive2_perturbed_breaks(wan22, change):
    got, expected = longlive2_case(wan22, **change)
    assert rel(got, expected) > BROKEN


# -- FashionChameleon: reference + garment in context, 23-frame cache with a 1-chunk sink, block re-cache -----------


def fashionchameleon_case(model, **changes):
    prompts, seed, blocks = _prompts(11, {8: 1}), 15, 11  # the switch after the cache has rolled
    table = noise_table(seed, blocks, 4, (1, 48, 3, LATENT, LATENT))
    gen = torch.Generator().manual_seed(6)
    ref_lat, gar_lat = (torch.randn(1, 1, 48, LATENT, LATENT, generator=gen) for _ in range(2))
    expected = ref.fashionchameleon_loop(model, prompts, as_ref_noise(table), ref.Grid(1, 48, LATENT, LATENT, 16),
                                         ref_lat, gar_lat)
    settings = PROFILES["fashionchameleon"].settings_for(16, **changes)
    state = start_stream(model, context=prompts[0], reference=ref_lat.permute(0, 2, 1, 3, 4),
                         garment=gar_lat.permute(0, 2, 1, 3, 4), seed=seed, settings=settings)
    state, first = generate(state, 8 * 3)
    state, second = generate(switch_prompt(state, prompts[8]), 3 * 3)
    return torch.cat([first, second], dim=2).permute(0, 2, 1, 3, 4), expected


def test_fashionchameleon_matches_its_loop(wan22):
    got, expected = fashionchameleon_case(wan22)
    assert got.shape == expected.shape == (1, 33, 48, LATENT, LATENT)
    assert rel(got, expected) <= TOL


@pytest.mark.slow  # a check that the comparison can fail; the full suite runs it
@pytest.mark.parametrize("change", [{"cache_frames": 20}, {"sink_chunks": 0}, {"steps": 3}],
                         ids=["window", "sink", "timestep"])
def test_fashionchameleon_perturbed_breaks(wan22, change):
    got, expected = fashionchameleon_case(wan22, **change)
    assert rel(got, expected) > BROKEN


@pytest.mark.slow  # a check that the comparison can fail; the full suite runs it
@pytest.mark.parametrize("case", ["fashionchameleon", "longlive2", "longlive1", "self_forcing", "causvid"])
def test_rope_gap_breaks(wan21, wan22, case, monkeypatch):
    """RoPE positions continue frame by frame across chunks: one frame of gap after the first chunk breaks it."""
    original = rope_module.Rope.for_frames

    def gap(config, frame_start, frames, h, w, device):
        return original(config, frame_start + (frame_start >= 3), frames, h, w, device)

    monkeypatch.setattr(rope_module.Rope, "for_frames", staticmethod(gap))
    run, model = {"fashionchameleon": (fashionchameleon_case, wan22), "longlive2": (longlive2_case, wan22),
                  "longlive1": (longlive1_case, wan21), "self_forcing": (self_forcing_case, wan21),
                  "causvid": (causvid_case, wan21)}[case]
    got, expected = run(model)
    assert rel(got, expected) > BROKEN


def test_profiles_name_their_rules():
    """Every profile is a StreamSettings bundle; the public ones stream without reference and garment."""
    for name, prof in PROFILES.items():
        assert prof.name == name
        assert prof.settings.conditions == (name == "fashionchameleon")
        assert dataclasses.replace(prof.settings) == prof.settings
