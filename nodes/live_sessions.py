"""The live sessions of this ComfyUI process: a thread-safe registry ``session id -> LiveSession``.

The live node (``nodes/live.py``) runs in ComfyUI's worker thread; the pack's routes (``nodes/live_routes.py``) run on
the server's event loop. They meet here: a route validates a command and puts it on the session's ``queue.Queue``;
the node's :class:`CommandAdapter` drains that queue at each chunk boundary and hands the session loop
(``chameleon_core.session.Session``) its switches. Nothing here imports ComfyUI, so the checks run in the repo's tests.

Raw commands on the queue (plain tuples, made only by :func:`submit`):

- ``("garment", name, image)``: an uploaded image name and its pixels ``[1, H, W, C]`` in 0..1 (loaded by the route,
  so a missing or unreadable file is a 400 at once, not an error mid-stream);
- ``("prompt", text)``: encoded by the node in the worker thread (the text encoder never runs on the event loop);
- ``("stop",)``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from ..chameleon_core.session import STOP, GarmentSwitch, PromptSwitch

RUNNING = "running"
ENDED = ("finished", "stopped", "cancelled", "failed")
KEEP_ENDED = 16
"""Ended sessions kept for their status and timeline (and to answer a late command with 409, not 404)."""


class CommandError(Exception):
    """A bad command: an HTTP status and a message for the client. Never reaches the stream."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class LiveSession:
    id: str
    node_id: str
    prompt_id: str
    accepts_prompt: bool
    """True when the node was given the text encoder (prompt switches need it)."""
    commands: queue.Queue = field(default_factory=queue.Queue)
    status: str = RUNNING
    chunk: int = 0
    """Chunks generated so far."""
    frames: int = 0
    """Video frames generated so far."""
    max_frames: int = 0
    """The frame limit (0: until stopped)."""
    fps: float = 0.0
    """Generation speed in video frames per second (backbone + decode), over the session so far."""
    timeline: list[dict] = field(default_factory=list)
    """Switches as applied (chunk, kind, label, video frame)."""
    error: str = ""
    started: float = field(default_factory=time.time)

    def snapshot(self) -> dict:
        return {"session": self.id, "node": self.node_id, "prompt_id": self.prompt_id, "status": self.status,
                "chunk": self.chunk, "frames": self.frames, "max_frames": self.max_frames, "fps": round(self.fps, 3),
                "accepts_prompt": self.accepts_prompt, "pending": self.commands.qsize(),
                "timeline": list(self.timeline), "error": self.error}


class Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, LiveSession] = OrderedDict()

    def open(self, session: LiveSession) -> LiveSession:
        with self._lock:
            self._sessions[session.id] = session
            ended = [k for k, s in self._sessions.items() if s.status in ENDED]
            for key in ended[: max(0, len(ended) - KEEP_ENDED)]:
                del self._sessions[key]
        return session

    def get(self, session_id: str) -> LiveSession:
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            raise CommandError(404, f"no live session {session_id!r}; GET /chameleon/live lists the sessions")
        return session

    def update(self, session: LiveSession, **values) -> None:
        with self._lock:
            for key, value in values.items():
                setattr(session, key, value)

    def snapshot(self, session_id: str) -> dict:
        session = self.get(session_id)
        with self._lock:
            return session.snapshot()

    def list(self) -> list[dict]:
        with self._lock:
            return [s.snapshot() for s in self._sessions.values()]


REGISTRY = Registry()


def submit(session_id: str, body: object, load_image: Callable[[str], object]) -> dict:
    """Validate a switch command (``{"garment": name}`` or ``{"prompt": text}``) and queue it; raises
    :class:`CommandError` (404 unknown session, 409 ended, 400 bad body / image / prompt)."""
    session = REGISTRY.get(session_id)
    _check_running(session)
    if not isinstance(body, dict) or ("garment" in body) == ("prompt" in body):
        raise CommandError(400, 'send {"garment": "<uploaded image name>"} or {"prompt": "<text>"}, one of them')
    if "garment" in body:
        name = body["garment"]
        if not isinstance(name, str) or not name.strip():
            raise CommandError(400, "garment: give the name of an image uploaded through POST /upload/image")
        image = load_image(name)  # raises CommandError(400) when missing or unreadable
        session.commands.put(("garment", name, image))
        return {"queued": "garment", "garment": name, "session": session_id}
    text = body["prompt"]
    if not isinstance(text, str) or not text.strip():
        raise CommandError(400, "prompt: the text is empty; write the new prompt")
    if not session.accepts_prompt:
        raise CommandError(400, "prompt switches need the text encoder: connect a CLIPLoader (type wan) to the "
                                "live node's clip input and queue it again")
    session.commands.put(("prompt", text.strip()))
    return {"queued": "prompt", "prompt": text.strip(), "session": session_id}


def stop(session_id: str) -> dict:
    session = REGISTRY.get(session_id)
    _check_running(session)
    session.commands.put(("stop",))
    return {"queued": "stop", "session": session_id}


def _check_running(session: LiveSession) -> None:
    if session.status != RUNNING:
        raise CommandError(409, f"live session {session.id} has ended ({session.status}); queue the workflow again")


class CommandAdapter:
    """What the session loop sees as its command queue: at each boundary it drains the raw queue once, keeps the
    latest garment and the latest prompt (several queued at one boundary: the latest wins), and hands them out as
    ``GarmentSwitch`` / ``PromptSwitch`` (garment first), or :data:`STOP`.

    ``encode_prompt``: text -> prompt features ``[1, L, D]`` (the node's text encoder), called here, in the worker
    thread. A prompt that fails to encode is logged into the session's error and skipped: it never stops the stream.
    """

    def __init__(self, session: LiveSession, encode_prompt: Callable[[str], object] | None,
                 garment_options: dict | None = None) -> None:
        self.session = session
        self.encode_prompt = encode_prompt
        self.garment_options = garment_options or {}
        self._ready: list = []

    def get_nowait(self):
        if not self._ready:
            self._ready = self._drain()
            if not self._ready:
                raise queue.Empty
            self._ready.append(None)  # end of this boundary: the session's drain stops here
        item = self._ready.pop(0)
        if item is None:
            raise queue.Empty
        return item

    def _drain(self) -> list:
        garment = prompt = None
        while True:
            try:
                raw = self.session.commands.get_nowait()
            except queue.Empty:
                break
            if raw[0] == "stop":
                return [STOP]
            if raw[0] == "garment":
                garment = raw
            elif raw[0] == "prompt":
                prompt = raw
        out: list = []
        if garment is not None:
            out.append(GarmentSwitch(garment[2], label=garment[1], **self.garment_options))
        if prompt is not None and self.encode_prompt is not None:
            try:
                out.append(PromptSwitch(self.encode_prompt(prompt[1]), label=prompt[1]))
            except Exception as e:  # noqa: BLE001 (the text encoder's own errors): reported, the stream goes on
                REGISTRY.update(self.session, error=f"prompt {prompt[1]!r} not applied: {e}")
        return out
