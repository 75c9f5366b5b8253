"""The live node's session registry and command adapter (``nodes/live_sessions.py``), without ComfyUI: what the
routes answer for bad commands, and what the session loop receives at a boundary (latest garment wins)."""

from __future__ import annotations

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
