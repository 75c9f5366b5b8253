"""The pack's routes on ComfyUI's server, for the live node; the only module that touches ``server.PromptServer``.

    POST /chameleon/live/{session}/switch   {"garment": "<uploaded image name>"} or {"prompt": "<text>"}
    POST /chameleon/live/{session}/stop
    GET  /chameleon/live/{session}          status, chunk, frames, fps, timeline
    GET  /chameleon/live/{session}/workflow the API workflow that regenerates an ended session (409 while running)
    GET  /chameleon/live                    every session this process knows (running and recently ended)

ComfyUI serves each under ``/api`` too. A command goes onto the session's ``queue.Queue`` and is applied at the next
chunk boundary; a bad one gets a JSON ``{"error": ...}`` with 400 (bad body, missing image, empty prompt, no text
encoder), 404 (unknown session) or 409 (the session has ended), and the stream never sees it. The handlers run on
the server's event loop and never block: images are read here (small files), prompts are encoded by the node in
the worker thread.

The live node calls :func:`announce` when a session starts (``chameleon.live.started`` to the client that queued the
prompt: the widget learns its session id from it), and :func:`send_frame` for every frame (``chameleon.live.frame``,
the node's own channel: independent of ComfyUI's ``--preview-method``; see ``nodes/live_frames.py``).
"""

from __future__ import annotations

import json
import logging

from . import live_frames, live_sessions
from .adapters.values import load_input_image

logger = logging.getLogger(__name__)

_registered = False


def _server():
    try:
        from server import PromptServer
    except ImportError:  # outside ComfyUI (the repo's tests)
        return None
    return getattr(PromptServer, "instance", None)


def _load_garment(name: str):
    try:
        return load_input_image(name)
    except ValueError as e:
        raise live_sessions.CommandError(400, f"garment: {e}") from None


def register() -> bool:
    """Add the routes to ComfyUI's server (once per process); False outside ComfyUI."""
    global _registered
    server = _server()
    if _registered or server is None:
        return _registered
    from aiohttp import web

    def answer(call):
        try:
            return web.json_response(call())
        except live_sessions.CommandError as e:
            return web.json_response({"error": e.message}, status=e.status)

    async def body_of(request) -> object:
        try:
            return await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    routes = server.routes

    @routes.post("/chameleon/live/{session}/switch")
    async def switch(request):
        body = await body_of(request)
        return answer(lambda: live_sessions.submit(request.match_info["session"], body, _load_garment))

    @routes.post("/chameleon/live/{session}/stop")
    async def stop(request):
        return answer(lambda: live_sessions.stop(request.match_info["session"]))

    @routes.get("/chameleon/live/{session}/workflow")
    async def replay(request):
        return answer(lambda: live_sessions.workflow(request.match_info["session"]))

    @routes.get("/chameleon/live/{session}")
    async def status(request):
        return answer(lambda: live_sessions.REGISTRY.snapshot(request.match_info["session"]))

    @routes.get("/chameleon/live")
    async def sessions(request):
        return answer(lambda: {"sessions": live_sessions.REGISTRY.list()})

    _registered = True
    logger.info("FashionChameleon live routes registered under /chameleon/live")
    return True


def client() -> str | None:
    """The client that queued the running prompt (None: an API caller without ``client_id``; messages then go to
    every connected client). Read by the live node when its session starts, on ComfyUI's worker thread."""
    server = _server()
    return getattr(server, "client_id", None) if server is not None else None


def announce(snapshot: dict, sid: str | None) -> None:
    """Tell the client ``sid`` that a live session started (thread-safe ``send_sync``)."""
    server = _server()
    if server is not None:
        server.send_sync("chameleon.live.started", snapshot, sid)


def send_frame(frame: dict, sid: str | None) -> None:
    """One frame to the client ``sid`` as a ``chameleon.live.frame`` message (thread-safe: called from the frame
    player's thread)."""
    server = _server()
    if server is not None:
        server.send_sync(live_frames.EVENT, frame, sid)
