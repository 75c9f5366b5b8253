"""The live node's own frame channel: each decoded frame goes to the live widget as a ``chameleon.live.frame``
websocket message (``nodes/live_routes.py`` sends it), whatever ComfyUI's ``--preview-method`` says.

ComfyUI's previews are off by default (``python main.py`` starts with ``--preview-method none``), and when on they are
drawn as the node's image behind the widget's controls; so the live node sends none of them and has its own message
type instead. :class:`FramePlayer` plays the frames at the video's frame rate from its own thread (JPEG encoding and
sending never block generation) and paces generation to real time: :meth:`FramePlayer.add` returns once the earlier
chunks have been shown, so the stream is never more than one chunk ahead of what the viewer sees and every frame is
shown (a live session lasts as long as its video, which leaves time to switch garments from the widget).

Nothing here imports ComfyUI: the node hands in ``send`` (the message) and ``shown`` (ComfyUI's progress bar).
"""

from __future__ import annotations

import base64
import collections
import io
import logging
import threading
import time
from collections.abc import Callable

import torch
from PIL import Image

logger = logging.getLogger(__name__)

EVENT = "chameleon.live.frame"
"""The websocket message type the widget listens to."""
MAX_SIDE = 768
"""Frames larger than this on their longer side are sent downscaled (the widget's view is smaller; the node's
output keeps the full frames)."""
QUALITY = 85


def encode_frame(frame: torch.Tensor, max_side: int = MAX_SIDE) -> str:
    """A frame ``[H, W, 3]`` (uint8, or float in 0..1) as a ``data:image/jpeg;base64,...`` URL."""
    if frame.dtype != torch.uint8:
        frame = (frame.float().clamp(0, 1) * 255).round().to(torch.uint8)
    image = Image.fromarray(frame.cpu().numpy())
    if max(image.size) > max_side:
        scale = max_side / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class FramePlayer:
    """Sends decoded frames at ``fps`` from its own thread: ``send({"chunk", "index", "image", **fields})`` per frame
    (``chunk``: chunks made so far, ``index``: the frame's index in the video), then ``shown(chunk)`` (the node moves
    ComfyUI's progress bar there). Errors of either are logged and never stop the stream.
    """

    def __init__(self, send: Callable[[dict], None], fps: float, shown: Callable[[int], None] | None = None,
                 fields: dict | None = None, max_side: int = MAX_SIDE) -> None:
        self.send, self.shown, self.fields = send, shown, dict(fields or {})
        self.interval = 1.0 / fps
        self.max_side = max_side
        self.sent = 0
        self.waited = 0.0
        """Seconds :meth:`add` spent waiting for the viewer (generation ahead of real time)."""
        self._frames: collections.deque = collections.deque()
        self._next_index = 0
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="chameleon-live-frames", daemon=True)
        self._thread.start()

    def add(self, chunk: int, frames: torch.Tensor) -> float:
        """Queue a decoded chunk's frames ``[F, H, W, 3]`` in 0..1 (``chunk``: its 0-based index), then wait until
        the frames queued before them have been shown. Returns the seconds waited."""
        frames = (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        start = time.perf_counter()
        with self._wake:
            for frame in frames:
                self._frames.append((chunk + 1, self._next_index, frame))
                self._next_index += 1
            self._wake.notify_all()
            while len(self._frames) > len(frames) and not self._closed and self._thread.is_alive():
                self._wake.wait(timeout=0.25)
        waited = time.perf_counter() - start
        self.waited += waited
        return waited

    def close(self) -> None:
        """Show what is queued (at the frame rate), then stop the thread."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        next_at = 0.0
        while True:
            with self._wake:
                while not self._frames and not self._closed:
                    self._wake.wait()
                if not self._frames:
                    return
                chunk, index, frame = self._frames[0]
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            next_at = time.perf_counter() + self.interval
            try:
                self.send({**self.fields, "chunk": chunk, "index": index,
                           "image": encode_frame(frame, self.max_side)})
                self.sent += 1
                if self.shown is not None:
                    self.shown(chunk)
            except Exception:  # noqa: BLE001 (a closed socket, a failed encode): frames are best effort
                logger.exception("live frame %d not sent", index)
            with self._wake:
                self._frames.popleft()  # only now: add() waits until the earlier frames are shown
                self._wake.notify_all()
