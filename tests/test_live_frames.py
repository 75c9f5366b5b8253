"""The live node's own frame channel (``nodes/live_frames.py``): frames encoded as JPEG data URLs, every frame sent in
order at the frame rate, generation paced to what was shown, and a failing send never stopping the stream."""

from __future__ import annotations

import base64
import io
import threading
import time

import numpy as np
import torch
from PIL import Image

from comfyui_fashionchameleon.nodes.live_frames import FramePlayer, encode_frame


def _decode(url: str) -> np.ndarray:
    assert url.startswith("data:image/jpeg;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"), dtype=np.float32)


def test_a_frame_becomes_a_jpeg_data_url_of_the_same_picture():
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 6, generator=g), size=(48, 64), mode="bilinear")
    frame = smooth[0].permute(1, 2, 0)  # [H, W, 3] in 0..1
    back = _decode(encode_frame(frame))
    assert back.shape == (48, 64, 3)
    assert np.abs(back - frame.numpy() * 255).mean() < 3  # JPEG at quality 85 on a smooth picture
    other = _decode(encode_frame(frame.flip(1)))
    assert np.abs(other - frame.numpy() * 255).mean() > 10  # the comparison can tell pictures apart
    uint8 = (frame * 255).round().to(torch.uint8)
    assert np.array_equal(_decode(encode_frame(uint8)), back)


def test_a_large_frame_is_sent_downscaled_with_its_aspect():
    frame = torch.zeros(1280, 704, 3)
    assert _decode(encode_frame(frame, max_side=320)).shape == (320, 176, 3)


def _frames(n: int, value: float) -> torch.Tensor:
    return torch.full((n, 8, 8, 3), value)


def test_every_frame_is_sent_in_order_and_add_waits_for_the_earlier_chunks():
    sent: list[dict] = []
    shown: list[int] = []
    lock = threading.Lock()

    def send(frame: dict) -> None:
        with lock:
            sent.append(frame)

    fps = 100.0
    player = FramePlayer(send, fps, shown.append, fields={"session": "s", "node": "7"})
    start = time.perf_counter()
    seen_at_return = []
    for chunk, n in enumerate([9, 12, 12]):
        player.add(chunk, _frames(n, chunk / 3))
        with lock:
            seen_at_return.append(len(sent))
    player.close()
    elapsed = time.perf_counter() - start
    assert [f["index"] for f in sent] == list(range(33))
    assert [f["chunk"] for f in sent] == [1] * 9 + [2] * 12 + [3] * 12
    assert all(f["session"] == "s" and f["node"] == "7" for f in sent)
    assert shown == [f["chunk"] for f in sent]
    # paced: add(k) returns only once chunks before k were shown (generation at most one chunk ahead)
    assert seen_at_return[1] >= 9 and seen_at_return[2] >= 21, seen_at_return
    assert elapsed >= 32 / fps * 0.9  # played at the frame rate, none dropped
    assert player.waited > 0
    pixels = [_decode(f["image"]).mean() for f in sent]
    assert pixels[0] < 5 and abs(pixels[-1] - 2 / 3 * 255) < 5


def test_a_failing_send_is_logged_and_the_stream_goes_on(caplog):
    calls = []

    def send(frame: dict) -> None:
        calls.append(frame["index"])
        if frame["index"] == 2:
            raise ConnectionResetError("client went away")

    player = FramePlayer(send, 500.0)
    player.add(0, _frames(5, 0.5))
    player.add(1, _frames(4, 0.5))
    player.close()
    assert calls == list(range(9)) and player.sent == 8
    assert "live frame 2 not sent" in caplog.text


def test_close_with_nothing_queued_returns_at_once():
    player = FramePlayer(lambda frame: None, 1000.0)
    start = time.perf_counter()
    player.close()
    assert time.perf_counter() - start < 1
