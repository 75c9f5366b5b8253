"""The live node's session registry and command adapter (``nodes/live_sessions.py``), without ComfyUI: what the
routes answer for bad commands, and what the session loop receives at a boundary (latest garment wins)."""

from __future__ import annotations

import json
import queue

import pytest
import torch
from comfyui_fashionchameleon.chameleon_core.session import STOP, GarmentSwitch, PromptSwitch
from comfyui_fashionchameleon.nodes import live_sessions as ls


def _image(name: str) -> torch.Tensor:
    if name == "missing.png":
        raise ls.CommandError(400, "garment: no image 'missing.png'")
    return torch.full((1, 8, 8, 3), 0.5)


@pytest.fixture
def session():
    s = ls.REGISTRY.open(ls.LiveSession(id="p1-7", node_id="7", prompt_id="p1", accepts_prompt=True))
    yield s
    ls.REGISTRY.update(s, status="finished")


def _status(call) -> int:
    with pytest.raises(ls.CommandError) as e:
        call()
    return e.value.status


def test_bad_commands_get_clear_http_errors_and_queue_nothing(session):
    assert _status(lambda: ls.submit("nope", {"garment": "a.png"}, _image)) == 404
    assert _status(lambda: ls.submit(session.id, {"garment": "missing.png"}, _image)) == 400
    assert _status(lambda: ls.submit(session.id, {"prompt": "   "}, _image)) == 400
    assert _status(lambda: ls.submit(session.id, {}, _image)) == 400
    assert _status(lambda: ls.submit(session.id, {"garment": "a.png", "prompt": "x"}, _image)) == 400
    assert _status(lambda: ls.submit(session.id, None, _image)) == 400
    assert session.commands.empty()
    no_clip = ls.REGISTRY.open(ls.LiveSession(id="p2-7", node_id="7", prompt_id="p2", accepts_prompt=False))
    with pytest.raises(ls.CommandError) as e:
        ls.submit(no_clip.id, {"prompt": "a new prompt"}, _image)
    assert e.value.status == 400 and "clip" in e.value.message
    ls.REGISTRY.update(no_clip, status="finished")
    assert _status(lambda: ls.submit(no_clip.id, {"garment": "a.png"}, _image)) == 409
    assert _status(lambda: ls.stop(no_clip.id)) == 409


def test_adapter_hands_the_latest_garment_then_the_prompt_once_per_boundary(session):
    for name in ("a.png", "b.png", "c.png"):
        ls.submit(session.id, {"garment": name}, _image)
    ls.submit(session.id, {"prompt": "she turns"}, _image)
    adapter = ls.CommandAdapter(session, lambda text: torch.zeros(1, 4, 16))
    got = []
    with pytest.raises(queue.Empty):
        while True:
            got.append(adapter.get_nowait())
    assert [type(g) for g in got] == [GarmentSwitch, PromptSwitch]
    assert got[0].label == "c.png" and got[1].label == "she turns"
    with pytest.raises(queue.Empty):  # the next boundary: nothing new
        adapter.get_nowait()
    ls.submit(session.id, {"garment": "d.png"}, _image)
    ls.stop(session.id)
    assert adapter.get_nowait() is STOP
    assert ls.REGISTRY.snapshot(session.id)["session"] == session.id
    assert any(s["session"] == session.id for s in ls.REGISTRY.list())


def test_a_prompt_that_fails_to_encode_is_reported_and_skipped(session):
    ls.submit(session.id, {"prompt": "boom"}, _image)

    def encode(text):
        raise RuntimeError("encoder broke")

    adapter = ls.CommandAdapter(session, encode)
    with pytest.raises(queue.Empty):
        adapter.get_nowait()
    assert "encoder broke" in ls.REGISTRY.snapshot(session.id)["error"]


# -- reproducible sessions: timeline -> workflow -----------------------------------------------------------------

LIVE_PROMPT = {
    "1": {"class_type": "ChameleonStudentLoader", "inputs": {"ckpt_name": "s.safetensors", "weight_dtype": "default"}},
    "2": {"class_type": "VAELoader", "inputs": {"vae_name": "v.safetensors"}},
    "3": {"class_type": "CLIPLoader", "inputs": {"clip_name": "t.safetensors", "type": "wan", "device": "default"}},
    "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a", "clip": ["3", 0]}},
    "5": {"class_type": "LoadImage", "inputs": {"image": "reference.png"}},
    "6": {"class_type": "LoadImage", "inputs": {"image": "garment1.png"}},
    "7": {"class_type": "ChameleonConditions", "inputs": {"width": 64, "height": 64, "vae": ["2", 0],
                                                          "reference": ["5", 0], "garment": ["6", 0]}},
    "9": {"class_type": "ChameleonLiveStream", "inputs": {
        "seed": 7, "steps": 2, "chunk_frames": 3, "cache_frames": 23, "sink_chunks": 1, "max_frames": 0,
        "student": ["1", 0], "positive": ["4", 0], "conditions": ["7", 0], "vae": ["2", 0], "clip": ["3", 0]}},
    "10": {"class_type": "PreviewImage", "inputs": {"images": ["9", 0]}},
}


def _timeline(chunks: int, switches: list[dict]) -> dict:
    return {"version": 1, "seed": 7, "chunks": chunks, "frames": 0, "switches": switches,
            "settings": {"steps": 2, "chunk_frames": 3, "cache_frames": 23, "sink_chunks": 1, "temporal_stride": 4}}


def _by_type(wf: dict, class_type: str) -> list[dict]:
    return [wf[k] for k in sorted(wf, key=int) if wf[k]["class_type"] == class_type]


def test_timeline_becomes_a_garment_switch_chain():
    timeline = _timeline(6, [{"chunk": 2, "kind": "garment", "garment": "garment2.png", "video_frame": 21},
                             {"chunk": 4, "kind": "prompt", "prompt": "she walks away", "video_frame": 45},
                             {"chunk": 4, "kind": "garment", "garment": "garment3.png", "video_frame": 45},
                             {"chunk": 6, "kind": "garment", "garment": "late.png", "video_frame": 69}])
    wf = ls.timeline_to_workflow(json.dumps(timeline), LIVE_PROMPT, "9")
    assert "9" not in wf and "10" not in wf  # the live node and what reads it are gone
    for k in "1234567":
        assert wf[k] == LIVE_PROMPT[k]  # loaders, conditions and text encoder reused as they are
    (start,) = _by_type(wf, "ChameleonStreamStart")
    assert start["inputs"] == {"student": ["1", 0], "positive": ["4", 0], "conditions": ["7", 0], "seed": 7,
                               "steps": 2, "chunk_frames": 3, "cache_frames": 23, "sink_chunks": 1}
    assert [g["inputs"]["frames"] for g in _by_type(wf, "ChameleonStreamGenerate")] == [21, 24, 24]
    garments = _by_type(wf, "ChameleonGarmentSwitch")
    assert [wf[g["inputs"]["garment"][0]]["inputs"]["image"] for g in garments] == ["garment2.png", "garment3.png"]
    assert all(g["inputs"]["vae"] == ["2", 0] for g in garments)
    (prompt,) = _by_type(wf, "ChameleonPromptSwitch")
    text = wf[prompt["inputs"]["positive"][0]]
    assert text["inputs"] == {"text": "she walks away", "clip": ["3", 0]}
    # at one boundary: garment first, then the prompt, then the segment
    assert wf[prompt["inputs"]["stream"][0]]["class_type"] == "ChameleonGarmentSwitch"
    (decode,) = _by_type(wf, "ChameleonStreamDecode")
    gens = [k for k in sorted(wf, key=int) if wf[k]["class_type"] == "ChameleonStreamGenerate"]
    assert [decode["inputs"][f"segment_{i}"] for i in (1, 2, 3)] == [[g, 1] for g in gens]
    assert decode["inputs"]["chunk_frames"] == 3 and "decoder" not in decode["inputs"]
    (save,) = _by_type(wf, "SaveImage")
    assert save["inputs"]["images"][0] in wf and wf[save["inputs"]["images"][0]] is decode
    # every link points at a node of the workflow
    for node in wf.values():
        for v in node["inputs"].values():
            if isinstance(v, list):
                assert v[0] in wf


def test_timeline_to_workflow_refuses_what_it_cannot_replay():
    many = [{"chunk": i, "kind": "garment", "garment": "g.png"} for i in range(1, 9)]
    with pytest.raises(ValueError, match="8"):
        ls.timeline_to_workflow(_timeline(10, many), LIVE_PROMPT, "9")
    assert len(_by_type(ls.timeline_to_workflow(_timeline(10, many[:7]), LIVE_PROMPT, "9"),
                        "ChameleonStreamGenerate")) == 8
    no_clip = json.loads(json.dumps(LIVE_PROMPT))
    del no_clip["9"]["inputs"]["clip"]
    with pytest.raises(ValueError, match="clip"):
        ls.timeline_to_workflow(_timeline(4, [{"chunk": 2, "kind": "prompt", "prompt": "x"}]), no_clip, "9")
    with pytest.raises(ValueError, match="no chunks"):
        ls.timeline_to_workflow(_timeline(0, []), LIVE_PROMPT, "9")


def test_workflow_route_answers_409_while_running_and_the_workflow_after(session):
    assert _status(lambda: ls.workflow(session.id)) == 409
    ls.REGISTRY.update(session, status="stopped", api_prompt=LIVE_PROMPT, node_id="9",
                       record=_timeline(3, [{"chunk": 1, "kind": "garment", "garment": "garment2.png"}]))
    wf = ls.workflow(session.id)
    assert len(_by_type(wf, "ChameleonStreamGenerate")) == 2
    assert _by_type(wf, "SaveImage")[0]["inputs"]["filename_prefix"].endswith(session.id)
    assert _status(lambda: ls.workflow("nope")) == 404
