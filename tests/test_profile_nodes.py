"""The public students' profiles in the node adapters (no ComfyUI needed), the live session's garment refusal, and the
benchmark's ``--profile`` at tiny size on the CPU."""

from __future__ import annotations

import json
import types

import pytest
import torch
from comfyui_fashionchameleon.chameleon_core.config import PRESETS
from comfyui_fashionchameleon.chameleon_core.random_models import random_transformer
from comfyui_fashionchameleon.chameleon_core.config import StreamSettings
from comfyui_fashionchameleon.nodes.adapters.stream_start import RESIDENCY, start_node_stream
from comfyui_fashionchameleon.nodes import live_sessions as ls


def _student(profile: str, model):
    return types.SimpleNamespace(profile=profile, config=model.config, load=lambda: model, name="student.pt",
                                 shift=None, condition_weighting=None)


def _size(width=64, height=64, first=None, person=False):
    lat = torch.zeros(1, 16, 1, 8, 8)
    return types.SimpleNamespace(has_person=person, reference=lat if person else None,
                                 garment=lat if person else None, first_frame=first, width=width, height=height,
                                 family=None)


@pytest.fixture(scope="module")
def wan21():
    return random_transformer(PRESETS["tiny-wan2.1"], seed=0)


def test_stream_start_takes_the_profile_settings_and_the_video_size(wan21):
    ctx = [[torch.randn(1, 5, 64), {}]]
    state = start_node_stream("S", _student("longlive1", wan21), ctx, _size(), seed=0, steps=-1,
                                       chunk_frames=-1, cache_frames=-1, sink_chunks=-1)
    s = state.settings
    assert (s.chunk_frames, s.cache_frames, s.sink_chunks, s.conditions, s.prompt_recache) == (3, 12, 1, False,
                                                                                               "window")
    assert state.latent_shape == (1, 16, 8, 8)
    sf = start_node_stream("S", _student("self_forcing", wan21), ctx, _size(), seed=0, steps=2,
                                    chunk_frames=-1, cache_frames=-1, sink_chunks=-1)
    assert sf.settings.steps == 2 and sf.settings.cache_frames == 1023  # 32760 tokens at 16 a frame, capped


def test_stream_start_of_fashionchameleon_keeps_its_settings_and_conditions():
    model = random_transformer(PRESETS["tiny"], seed=1)
    person = types.SimpleNamespace(has_person=True, reference=torch.randn(1, 48, 1, 4, 4),
                                   garment=torch.randn(1, 48, 1, 4, 4), first_frame=None, width=64, height=64,
                                   family="wan2.2")
    ctx = [[torch.randn(1, 5, 64), {}]]
    state = start_node_stream("S", _student("fashionchameleon", model), ctx, person, seed=0, steps=4,
                              chunk_frames=3, cache_frames=23, sink_chunks=1)
    assert state.settings == StreamSettings() and state.latent_shape == (1, 48, 4, 4)
    assert state._box.residency is RESIDENCY  # every stream the nodes start shares the pack's device budget
    assert state.cache.positions[:2] == [0, 1]  # reference and garment prefilled at RoPE frames 0 and 1
    default = start_node_stream("S", _student("fashionchameleon", model), ctx, person, seed=0, steps=-1,
                                chunk_frames=-1, cache_frames=-1, sink_chunks=-1)
    assert default.settings == state.settings


def test_stream_start_refuses_conditions_the_profile_does_not_take(wan21):
    ctx = [[torch.randn(1, 5, 64), {}]]
    student = _student("causvid", wan21)
    with pytest.raises(ValueError, match=r"input 'conditions'.*causvid profile.*Fix: connect ChameleonVideoSize"):
        start_node_stream("S", student, ctx, _size(person=True), seed=0, steps=-1, chunk_frames=-1,
                                   cache_frames=-1, sink_chunks=-1)
    with pytest.raises(ValueError, match=r"input 'conditions' got 'first frame'.*text-to-video only"):
        start_node_stream("S", student, ctx, _size(first=torch.zeros(1, 16, 1, 8, 8)), seed=0, steps=-1,
                                   chunk_frames=-1, cache_frames=-1, sink_chunks=-1)
    with pytest.raises(ValueError, match=r"input 'width' got 60: not a multiple of 16"):
        start_node_stream("S", student, ctx, _size(width=60), seed=0, steps=-1, chunk_frames=-1,
                                   cache_frames=-1, sink_chunks=-1)
    with pytest.raises(ValueError, match=r"input 'conditions' got 'no reference / garment'"):
        start_node_stream("S", _student("fashionchameleon", wan21), ctx, _size(), seed=0, steps=-1,
                                   chunk_frames=-1, cache_frames=-1, sink_chunks=-1)


def test_a_live_session_without_a_garment_refuses_garment_commands():
    s = ls.REGISTRY.open(ls.LiveSession(id="pp-1", node_id="1", prompt_id="pp", accepts_prompt=True,
                                        accepts_garment=False))
    try:
        with pytest.raises(ls.CommandError) as e:
            ls.submit(s.id, {"garment": "a.png"}, lambda name: torch.zeros(1, 8, 8, 3))
        assert e.value.status == 400 and "no garment to switch" in e.value.message
        assert s.commands.empty() and ls.REGISTRY.snapshot(s.id)["accepts_garment"] is False
        assert ls.submit(s.id, {"prompt": "snow falls"}, lambda name: None)["queued"] == "prompt"
    finally:
        ls.REGISTRY.update(s, status="finished")


def test_bench_runs_a_profile_at_tiny_size(tmp_path):
    from comfyui_fashionchameleon.chameleon_core.tools import bench

    out = tmp_path / "b.json"
    assert bench.main(["--profile", "longlive2", "--preset", "tiny", "--height", "64", "--width", "64",
                       "--latent-frames", "16", "--recompute-at", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    cfg = result["config"]
    assert (cfg["profile"], cfg["chunk_frames"], cfg["cache_frames"], cfg["sampler"]) == ("longlive2", 8, 32, "unipc")
    assert cfg["latent_frames"] == 16
    assert "24.8 FPS" in result["published_speed"] and result["backbone_fps"] > 0
