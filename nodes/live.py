"""The live node: one long-running session that streams frames into the node while garment and prompt switches
arrive mid-run through the pack's routes (``nodes/live_routes.py``).

The loop is the core's :class:`~chameleon_core.session.Session` (``chunks=None`` or the frame limit); this node only
wires it to ComfyUI: the command queue of a registry entry (``nodes/live_sessions.py``), Cancel / the stop command,
and a :class:`~nodes.live_frames.FramePlayer` that sends each decoded frame to the widget on the node's own channel
(``chameleon.live.frame``, whatever ComfyUI's preview setting) at 24 fps, pacing generation to real time. The node
sends no ComfyUI previews: they would be drawn behind the widget's controls.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path

import torch
from comfy_api.latest import io

from ..chameleon_core.decoding import VideoSegment
from ..chameleon_core.session import Session
from ..chameleon_core.frames import chunks_for, latent_frames_for
from ..chameleon_core.streaming import NonFiniteChunkError
from . import live_frames, live_routes, live_sessions
from .adapters.checks import check_conditions, check_student, check_vae
from .adapters.stream_start import start_node_stream
from .adapters.tiny_decoder import check_decoder
from .adapters.vae import vae_codec
from .adapters.values import encode_text, video_to_image
from .errors import node_error, rewrap
from .progress import LiveProgress, consume_interrupt, executing_ids, interrupted
from .sockets import ConditionsSocket, ModelSocket, PreviewDecoderSocket, StreamSocket, with_aliases
from .stream_nodes import settings_inputs
from .types import ChameleonConditions, ChameleonModel, ChameleonPreviewDecoder, ChameleonStream

logger = logging.getLogger(__name__)

NODE = "ChameleonLiveStream"
FPS = 24.0
"""Wan's video frame rate: the widget plays the frames at it."""


class ChameleonLiveStream(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(**with_aliases(
            node_id=NODE,
            display_name="FashionChameleon Live Stream",
            category="FashionChameleon/stream",
            description="Streams the video into the node at 24 fps while it is made (any preview setting); switch "
                        "the garment or the prompt with the node's buttons (or POST /chameleon/live/{session}/switch). "
                        "Stops at the frame limit, on Stop, or on Cancel, keeping every chunk made. Outputs the "
                        "frames, the final stream and the session timeline (JSON).",
            inputs=[
                ModelSocket.Input("student", tooltip="From ChameleonStudentLoader (causal, few-step)."),
                io.Conditioning.Input("positive", tooltip="CLIPTextEncode with a CLIPLoader of type wan (umT5-XXL)."),
                ConditionsSocket.Input("conditions", tooltip="From ChameleonConditions, with the model's VAE (a public "
                                                             "student: ChameleonVideoSize)."),
                io.Vae.Input("vae", tooltip="The VAE the conditions were encoded with: decodes the frames (without "
                                            "a tiny decoder) and encodes switched garments."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed of the whole stream; same seed, inputs and switch chunks, same frames."),
                *settings_inputs(),
                io.Int.Input("max_frames", default=241, min=0, max=100000,
                             tooltip="Frame limit, rounded up to whole chunks; 0 runs until Stop or Cancel."),
                PreviewDecoderSocket.Input("decoder", optional=True,
                                           tooltip="Optional tiny decoder (ChameleonTinyDecoderLoader): decodes the "
                                                   "frames (shown and output) much faster than the VAE; garments "
                                                   "are still encoded with the VAE."),
                io.Clip.Input("clip", optional=True,
                              tooltip="The text encoder (CLIPLoader, type wan): needed for prompt switches from the "
                                      "node's prompt box."),
            ],
            outputs=[io.Image.Output(display_name="frames"), StreamSocket.Output(display_name="stream"),
                     io.String.Output(display_name="timeline")],
            hidden=[io.Hidden.prompt],
        ))

    @classmethod
    def fingerprint_inputs(cls, **kwargs) -> float:
        """Never from ComfyUI's cache: Run always starts a new session (what the widget switched is no input, so the
        same inputs would otherwise replay the last outputs without a frame)."""
        return time.time()

    @classmethod
    def execute(cls, student: ChameleonModel, positive, conditions: ChameleonConditions, vae, seed: int, steps: int,
                chunk_frames: int, cache_frames: int, sink_chunks: int, max_frames: int,
                decoder: ChameleonPreviewDecoder | None = None, clip=None) -> io.NodeOutput:
        check_student(NODE, "student", student)
        family = check_conditions(NODE, student, conditions)
        check_vae(NODE, vae, family)
        if decoder is not None:
            check_decoder(NODE, decoder, family)
        state = start_node_stream(NODE, student, positive, conditions, seed=seed, steps=steps,
                                           chunk_frames=chunk_frames, cache_frames=cache_frames,
                                           sink_chunks=sink_chunks)
        try:
            chunks = chunks_for(state, latent_frames_for(state, max_frames)) if max_frames else None
        except ValueError as e:
            raise rewrap(NODE, "max_frames", max_frames, e, "raise max_frames to at least one chunk, or 0") from None

        prompt_id, node_id = executing_ids()
        live = live_sessions.REGISTRY.open(live_sessions.LiveSession(
            id=f"{prompt_id or uuid.uuid4().hex}-{node_id or NODE}", node_id=node_id or "", prompt_id=prompt_id or "",
            accepts_prompt=clip is not None, accepts_garment=state.settings.conditions, max_frames=max_frames,
            api_prompt=_prompt(cls)))
        encode = (lambda text: encode_text(clip, text)) if clip is not None else None
        commands = live_sessions.CommandAdapter(live, encode)
        stop_pressed = False
        progress = LiveProgress(node_id, chunks)

        def should_stop() -> bool:
            nonlocal stop_pressed
            stop_pressed = stop_pressed or interrupted() or progress.cancelled
            return stop_pressed

        decoding_vae = decoder.decoder if decoder is not None else vae_codec(vae)
        session = Session(state, chunks=chunks, codec=vae_codec(vae), decoder=decoding_vae, commands=commands,
                          should_stop=should_stop)
        client = live_routes.client()  # frames go to the client that queued the prompt (all clients: none)
        player = live_frames.FramePlayer(lambda frame: live_routes.send_frame(frame, client), FPS, progress,
                                         fields={"session": live.id, "node": live.node_id})
        live_routes.announce(live.snapshot(), client)
        pixels, latents, t0 = [], [], time.perf_counter()
        try:
            for chunk in session:
                pixels.append(chunk.pixels.cpu())
                latents.append(chunk.latents)
                player.add(chunk.index, video_to_image(chunk.pixels))
                frames = session.video_frames
                working = time.perf_counter() - t0 - player.waited  # generation speed: time waiting for the viewer out
                live_sessions.REGISTRY.update(
                    live, chunk=chunk.index + 1, frames=frames, fps=frames / max(working, 1e-6),
                    timeline=[_switch(a) for a in session.applied])
        except NonFiniteChunkError as e:
            live_sessions.REGISTRY.update(live, status="failed", error=str(e))
            raise node_error(NODE, "student", student.name, str(e),
                             "load the model with weight_dtype bf16 or fp32") from None
        except BaseException as e:
            live_sessions.REGISTRY.update(live, status="failed", error=str(e) or type(e).__name__)
            raise
        finally:
            player.close()
        cancelled = interrupted() or progress.cancelled
        if cancelled:  # Cancel ends the session at a chunk boundary; what was made still goes downstream
            consume_interrupt()
        ended = "cancelled" if cancelled else "stopped" if session.stopped else "finished"
        timeline = {
            "version": 1, "seed": seed, "ended": ended, "chunks": session.done, "frames": session.video_frames,
            "settings": {"steps": state.settings.steps, "chunk_frames": state.settings.chunk_frames,
                         "cache_frames": state.settings.cache_frames, "sink_chunks": state.settings.sink_chunks,
                         "temporal_stride": state.model.config.latent.temporal_stride},
            "decoder": decoder.name if decoder is not None else None,
            "switches": [_switch(a) for a in session.applied],
            "session": live.id, "node": live.node_id, "prompt": live.api_prompt,
        }
        path = _save_timeline(live.id, timeline)
        live_sessions.REGISTRY.update(live, status=ended, timeline=timeline["switches"], record=timeline,
                                      timeline_file=path)
        video = torch.cat(pixels, dim=2)
        # The stream goes on with the session's decode: a garment switch or Stream Decode after this node continues
        # it instead of decoding the session's frames again.
        segment = VideoSegment(state.model.config.latent.to_raw(torch.cat(latents, dim=2)), 0,
                               clip_starts=session.state.clip_starts)
        segment.remember(decoding_vae, video, session.decoder)
        stream = ChameleonStream(session.state, student, video=segment)
        return io.NodeOutput(video_to_image(video), stream, json.dumps(timeline))


def _prompt(cls) -> dict | None:
    hidden = getattr(cls, "hidden", None)
    prompt = getattr(hidden, "prompt", None) if hidden is not None else None
    return json.loads(json.dumps(prompt)) if isinstance(prompt, dict) else None


def _save_timeline(session_id: str, timeline: dict) -> str:
    """Write the timeline (with the prompt that ran it: enough to replay it) into ComfyUI's output folder, beside the
    frames: ``fashionchameleon/live/<session>.timeline.json``. Returns the path ('' when it cannot be written)."""
    import folder_paths

    try:
        folder = Path(folder_paths.get_output_directory()) / "fashionchameleon" / "live"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{session_id}.timeline.json"
        path.write_text(json.dumps(timeline, indent=1))
        return str(path)
    except OSError as e:  # a full or read-only disk never loses the frames
        logger.warning("live session %s: timeline not saved: %s", session_id, e)
        return ""


def _switch(applied) -> dict:
    entry = {"chunk": applied.chunk, "kind": applied.kind, "video_frame": applied.video_frame,
             "seconds": round(applied.seconds, 4), "new_clip": applied.new_clip}
    entry["garment" if applied.kind == "garment" else "prompt"] = applied.label
    return entry
