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

import json
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from ..chameleon_core.frames import TEMPORAL_STRIDE, segment_video_frames
from ..chameleon_core.session import STOP, GarmentSwitch, PromptSwitch
from .adapters.segments import MAX_SEGMENTS

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
    accepts_garment: bool = True
    """False for a stream without a garment (a public student's text-/image-to-video profile)."""
    commands: queue.Queue = field(default_factory=queue.Queue)
    status: str = RUNNING
    chunk: int = 0
    """Chunks generated so far."""
    frames: int = 0
    """Video frames generated so far."""
    max_frames: int = 0
    """The frame limit (0: until stopped)."""
    fps: float = 0.0
    """Generation speed in video frames per second (backbone + decode), over the session so far, time spent waiting
    for the viewer left out (the node paces generation to its 24 fps player)."""
    timeline: list[dict] = field(default_factory=list)
    """Switches as applied (chunk, kind, label, video frame)."""
    error: str = ""
    started: float = field(default_factory=time.time)
    api_prompt: dict | None = field(default=None, repr=False)
    """The API prompt that ran the live node (for :func:`workflow`)."""
    record: dict | None = field(default=None, repr=False)
    """The full timeline (seed, settings, chunks, switches) once the session has ended."""
    timeline_file: str = ""
    """Where the node saved the timeline JSON (ComfyUI's output folder), once ended."""

    def snapshot(self) -> dict:
        return {"session": self.id, "node": self.node_id, "prompt_id": self.prompt_id, "status": self.status,
                "chunk": self.chunk, "frames": self.frames, "max_frames": self.max_frames, "fps": round(self.fps, 3),
                "accepts_prompt": self.accepts_prompt, "accepts_garment": self.accepts_garment, "pending": self.commands.qsize(),
                "timeline": list(self.timeline), "error": self.error, "timeline_file": self.timeline_file}


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
        if not session.accepts_garment:
            raise CommandError(400, "this stream has no garment to switch (a public student streaming text-/image-"
                                    "to-video); switch its prompt instead")
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


def workflow(session_id: str) -> dict:
    """The API workflow that regenerates an ended session's frames (:func:`timeline_to_workflow`); 409 while it
    runs, 400 when it cannot be replayed."""
    session = REGISTRY.get(session_id)
    if session.status == RUNNING or session.record is None or session.api_prompt is None:
        raise CommandError(409, f"live session {session_id} is {session.status}; its workflow is ready when it ends")
    try:
        return timeline_to_workflow(session.record, session.api_prompt, session.node_id,
                                    filename_prefix=f"fashionchameleon/live_replay/{session_id}")
    except (ValueError, KeyError) as e:
        raise CommandError(400, f"live session {session_id} cannot be replayed: {e}") from None


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


# -------------------------------------------------------------------------------------------------------------------
# Reproducible sessions: a timeline -> a garment_switch_chain-style API workflow
# -------------------------------------------------------------------------------------------------------------------


def _upstream(prompt: dict, node_id: str) -> set[str]:
    """The nodes ``node_id`` reads from, transitively (not itself)."""
    seen, todo = set(), [node_id]
    while todo:
        for value in prompt[todo.pop()]["inputs"].values():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) in prompt and str(value[0]) not in seen:
                seen.add(str(value[0]))
                todo.append(str(value[0]))
    return seen


def timeline_to_workflow(timeline: dict | str, live_prompt: dict, live_node_id: str,
                         filename_prefix: str = "fashionchameleon/live_replay") -> dict:
    """Turn a live session's timeline (the live node's ``timeline`` output) into an API workflow of the
    ``garment_switch_chain`` kind that, queued, regenerates the session's frames.

    ``live_prompt``: the API prompt that ran the live node ``live_node_id``; its loaders, conditions, text encoder and
    VAE (everything upstream of the live node) are reused as they are. The chain: ChameleonStreamStart (the live
    node's seed and settings) -> ChameleonStreamGenerate (each segment's frames, from the switch chunks) ->
    ChameleonGarmentSwitch (a LoadImage of the uploaded garment) / ChameleonPromptSwitch (a CLIPTextEncode of the
    text with the live node's clip) -> ... -> ChameleonStreamDecode (every segment; the live node's tiny decoder if
    it had one, chunk by chunk as the live node decoded) -> SaveImage. Raises ValueError for a timeline that cannot
    be replayed (no chunks, a prompt switch without a text encoder, more than 8 segments: one decode node takes 8,
    and decoding in two nodes would restart the VAE's carried state and change the frames).
    """
    if isinstance(timeline, str):
        timeline = json.loads(timeline)
    live_node_id = str(live_node_id)
    if live_node_id not in live_prompt:
        raise ValueError(f"node {live_node_id!r} is not in the live prompt")
    live = live_prompt[live_node_id]["inputs"]
    settings = timeline["settings"]
    c, chunks = int(settings["chunk_frames"]), int(timeline["chunks"])
    if chunks < 1:
        raise ValueError("the session made no chunks: nothing to replay")
    # Switches at the same boundary are applied together (garment first, as the session does); switches at the end
    # (no chunk after them) change no frame and are left out.
    boundaries: dict[int, list[dict]] = {}
    for switch in timeline.get("switches", []):
        if 0 < switch["chunk"] < chunks:
            boundaries.setdefault(int(switch["chunk"]), []).append(switch)
    starts = [0] + sorted(boundaries)
    if len(starts) > MAX_SEGMENTS:
        raise ValueError(f"the session has {len(starts)} segments ({len(starts) - 1} switch boundaries); one "
                         f"ChameleonStreamDecode takes {MAX_SEGMENTS} and decoding in two nodes would restart the "
                         f"VAE's carried state; replay at most {MAX_SEGMENTS - 1} switch boundaries")
    # a garment switch that started a new clip (the default) shows one latent frame less after it
    clip_chunks = {start for start in starts[1:] if any(s.get("new_clip") for s in boundaries[start])}
    frames = segment_video_frames(starts, chunks, c, clip_chunks=clip_chunks,
                                  stride=int(settings.get("temporal_stride", TEMPORAL_STRIDE)))

    keep = _upstream(live_prompt, live_node_id)
    out = {k: json.loads(json.dumps(live_prompt[k])) for k in sorted(keep)}
    numeric = [int(k) for k in live_prompt if str(k).isdigit()]
    next_id = [max(numeric, default=0)]

    def add(class_type: str, inputs: dict, title: str) -> list:
        next_id[0] += 1
        key = str(next_id[0])
        out[key] = {"class_type": class_type, "inputs": inputs, "_meta": {"title": title}}
        return [key, 0]

    stream = add("ChameleonStreamStart", {
        "student": live["student"], "positive": live["positive"], "conditions": live["conditions"],
        "seed": int(timeline["seed"]), "steps": int(settings["steps"]), "chunk_frames": c,
        "cache_frames": int(settings["cache_frames"]), "sink_chunks": int(settings["sink_chunks"])},
        "FashionChameleon Stream Start")
    segments = []
    for i, start in enumerate(starts):
        for switch in sorted(boundaries.get(start, []), key=lambda s: s["kind"] != "garment"):
            if switch["kind"] == "garment":
                image = add("LoadImage", {"image": switch["garment"]}, f"Garment at chunk {start}")
                stream = add("ChameleonGarmentSwitch", {
                    "stream": stream, "vae": live["vae"], "garment": image, "refresh": True, "withdraw": True,
                    "disentangle": True, "withdraw_sink": True}, f"Garment switch at chunk {start}")
            else:
                if "clip" not in live:
                    raise ValueError(f"the prompt switch at chunk {start} needs the live node's clip input")
                text = add("CLIPTextEncode", {"text": switch["prompt"], "clip": live["clip"]},
                           f"Prompt at chunk {start}")
                stream = add("ChameleonPromptSwitch", {"stream": stream, "positive": text},
                             f"Prompt switch at chunk {start}")
        gen = add("ChameleonStreamGenerate", {"stream": stream, "frames": frames[i], "steps": 0},
                  f"Segment {i + 1} (chunks {start}..{(starts + [chunks])[i + 1] - 1})")
        stream, segments = gen, segments + [[gen[0], 1]]
    decode = {"vae": live["vae"], "chunk_frames": c, **{f"segment_{i}": s for i, s in enumerate(segments, 1)}}
    if "decoder" in live:
        decode["decoder"] = live["decoder"]
    frames_node = add("ChameleonStreamDecode", decode, "FashionChameleon Stream Decode")
    add("SaveImage", {"images": frames_node, "filename_prefix": filename_prefix}, "Save Image")
    return out
