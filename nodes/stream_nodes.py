"""Streaming nodes: start a stream, generate segments, switch garment or prompt. Each returns a new stream state.

Generate runs the core's session loop (``chameleon_core.session.Session``, latents only: the decode node decodes the
segments as one video); the switches call the core's rescheduling with the codec over ComfyUI's VAE. Each Generate
adds a video segment to the stream (``chameleon_core.decoding.VideoSegment``), so a garment switch's disentangle
decodes only the chunks nobody decoded yet, and Stream Decode reuses what the switches decoded.
"""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from ..chameleon_core.config import MAX_CACHE_FRAMES
from ..chameleon_core.profiles import PROFILES
from ..chameleon_core.rescheduling import switch_garment, switch_prompt
from ..chameleon_core.session import Session, encode_condition
from ..chameleon_core.frames import chunks_for, latent_frames_for
from ..chameleon_core.streaming import NonFiniteChunkError
from .adapters.checks import check_conditions, check_garment_stream, check_student, check_student_stream, check_vae
from .adapters.segments import last_decoded_frame, next_video_segment, segment_latent
from .adapters.stream_start import PROFILE_VALUE, STREAM_INPUTS, start_node_stream
from .adapters.tiny_decoder import TinyPreview, check_decoder
from .adapters.vae import vae_codec
from .adapters.values import conditioning_tensor, first_image
from .errors import node_error, rewrap
from .progress import ChunkProgress, interrupted, raise_if_interrupted
from .sockets import ConditionsSocket, ModelSocket, PreviewDecoderSocket, StreamSocket, with_aliases
from .types import ChameleonConditions, ChameleonModel, ChameleonPreviewDecoder, ChameleonStream

logger = logging.getLogger(__name__)


SETTING_LIMITS = {"steps": 16, "chunk_frames": 16, "cache_frames": MAX_CACHE_FRAMES, "sink_chunks": 8}
"""The largest value each stream-setting input offers (the widgets' range; the settings themselves allow more)."""
SETTING_TOOLTIPS = {
    "steps": "Denoising steps per chunk",
    "chunk_frames": "Latent frames per chunk (video frames: 4 per latent frame, the stream's very first 1)",
    "cache_frames": "KV cache length in latent frames (conditions + sink + history)",
    "sink_chunks": "Chunks kept forever after the conditions (the attention sink)",
}


def _profiles_value(name: str) -> str:
    """What each stream profile sets ``name`` to, as a tooltip lists it (from :data:`PROFILES`, never typed here)."""
    values = []
    for prof in PROFILES.values():
        native = " at its native size" if name == "cache_frames" and prof.cache_tokens else ""
        values.append(f"{prof.name} {getattr(prof.settings, name)}{native}")
    return ", ".join(values)


def settings_inputs() -> list:
    """The stream-settings inputs of every node that starts a stream (Stream Start, Live Stream); -1 takes the
    value of the student's profile (its own loop, chosen on the loader)."""
    return [io.Int.Input(name, default=PROFILE_VALUE, min=PROFILE_VALUE, max=SETTING_LIMITS[name],
                         tooltip=f"{SETTING_TOOLTIPS[name]}; -1: the student's profile's ({_profiles_value(name)}).")
            for name in STREAM_INPUTS]


class ChameleonStreamStart(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(**with_aliases(
            node_id="ChameleonStreamStart",
            display_name="FashionChameleon Stream Start",
            category="FashionChameleon/stream",
            description="Starts a stream: prefills the reference and garment KV of the causal student (a public "
                        "student's stream starts from its size, or a first frame, instead).",
            inputs=[
                ModelSocket.Input("student", tooltip="From ChameleonStudentLoader (causal, few-step)."),
                io.Conditioning.Input("positive", tooltip="CLIPTextEncode with a CLIPLoader of type wan (umT5-XXL)."),
                ConditionsSocket.Input("conditions", tooltip="From ChameleonConditions (FashionChameleon: person and "
                                                             "garment), or ChameleonVideoSize (a public student: size "
                                                             "and optional first frame)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed of the whole stream; same seed and inputs, same frames."),
                *settings_inputs(),
            ],
            outputs=[StreamSocket.Output(display_name="stream")],
        ))

    @classmethod
    def execute(cls, student: ChameleonModel, positive, conditions: ChameleonConditions, seed: int, steps: int,
                chunk_frames: int, cache_frames: int, sink_chunks: int) -> io.NodeOutput:
        node = "ChameleonStreamStart"
        check_student(node, "student", student)
        check_conditions(node, student, conditions)
        state = start_node_stream(node, student, positive, conditions, seed=seed, steps=steps,
                                           chunk_frames=chunk_frames, cache_frames=cache_frames,
                                           sink_chunks=sink_chunks)
        return io.NodeOutput(ChameleonStream(state, student))


class ChameleonStreamGenerate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(**with_aliases(
            node_id="ChameleonStreamGenerate",
            display_name="FashionChameleon Stream Generate",
            category="FashionChameleon/stream",
            description="Generates the next segment chunk by chunk. Returns the advanced stream and this segment's "
                        "latents; the input stream is left as it was.",
            inputs=[
                StreamSocket.Input("stream", tooltip="From ChameleonStreamStart, a switch node or another Generate."),
                io.Int.Input("frames", default=81, min=1, max=100000,
                             tooltip="Video frames to add, rounded up to whole chunks (a chunk of 3 latent frames "
                                     "is 12 frames; the very first chunk 9)."),
                io.Int.Input("steps", default=0, min=0, max=16,
                             tooltip="Denoising steps per chunk for this segment; 0 keeps the stream's (set at "
                                     "Stream Start; the student is distilled for 4)."),
                PreviewDecoderSocket.Input("decoder", optional=True,
                                           tooltip="Optional tiny decoder (ChameleonTinyDecoderLoader): the per-chunk "
                                                   "preview shows its decoded last frame instead of the Latent2RGB "
                                                   "colours. Costs one tiny decode per chunk; the output latents "
                                                   "are the same."),
            ],
            outputs=[StreamSocket.Output(display_name="stream"), io.Latent.Output(display_name="segment")],
        ))

    @classmethod
    def execute(cls, stream: ChameleonStream, frames: int, steps: int = 0,
                decoder: ChameleonPreviewDecoder | None = None) -> io.NodeOutput:
        node = "ChameleonStreamGenerate"
        check_student_stream(node, stream)
        family = stream.state.model.config.latent
        if decoder is not None:
            check_decoder(node, decoder, family)
        try:
            latent_frames = latent_frames_for(stream.state, frames)
        except ValueError as e:
            raise rewrap(node, "frames", frames, e, "raise frames to at least one chunk") from None
        try:  # a source video (Video Try-On / Motion Transfer) too short, a condition weighting that misses steps
            session = Session(stream.state, chunks=chunks_for(stream.state, latent_frames), decode=False,
                              should_stop=interrupted, steps=steps or None)
        except ValueError as e:
            raise rewrap(node, "frames", frames, e, "generate fewer frames (or give a longer video), and keep steps "
                         "at the condition weighting's length") from None
        preview = TinyPreview(decoder, family) if decoder is not None else None
        progress, chunks = ChunkProgress(session.chunks, frames=preview), []
        stream.model.load()
        try:
            for chunk in session:
                chunks.append(chunk.latents)
                progress(chunk.index, session.chunks, chunk.latents)
        except NonFiniteChunkError as e:
            raise node_error(node, "stream", stream.model.name, str(e),
                             "load the model with weight_dtype bf16 or fp32") from None
        if session.stopped:
            raise_if_interrupted()
        segment = next_video_segment(stream, family.to_raw(torch.cat(chunks, dim=2)))
        out = stream.with_state(session.state, video=segment)
        made = family.video_frames(segment.latents.shape[2], from_start=segment.start == 0,
                                   opens_clip=bool(segment.clip_starts))
        if made != frames:  # never silent: say what the frame count became
            logger.warning("%s: frames %d rounded up to %d video frames (whole chunks of %d latent frames; use %d "
                           "for no rounding)", node, frames, made, stream.state.settings.chunk_frames, made)
        return io.NodeOutput(out, segment_latent(out))


class ChameleonGarmentSwitch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(**with_aliases(
            node_id="ChameleonGarmentSwitch",
            display_name="FashionChameleon Garment Switch",
            category="FashionChameleon/stream",
            description="Switches the garment at the next chunk boundary by rescheduling the KV cache. The three "
                        "operations are independent, for comparison and ablation.",
            inputs=[
                StreamSocket.Input("stream", tooltip="A stream from Generate (disentangle needs generated frames)."),
                io.Vae.Input("vae", tooltip="The VAE the conditions were encoded with."),
                io.Image.Input("garment", tooltip="The new garment; any size, RGB/RGBA/grey (fitted with white pad)."),
                io.Boolean.Input("refresh", default=True,
                                 tooltip="Garment KV refresh: the garment slot gets the new garment's keys."),
                io.Boolean.Input("withdraw", default=True,
                                 tooltip="Historical KV withdraw: drop the history so the old garment does not persist."),
                io.Boolean.Input("disentangle", default=True,
                                 tooltip="Reference KV disentangle: the last frame becomes the new reference, which "
                                         "keeps identity, pose and background continuous."),
                io.Boolean.Input("withdraw_sink", default=True,
                                 tooltip="With withdraw: also drop the sink (first chunk), as the paper's figure does; "
                                         "a new sink forms from the next chunk."),
            ],
            outputs=[StreamSocket.Output(display_name="stream")],
        ))

    @classmethod
    def execute(cls, stream: ChameleonStream, vae, garment: torch.Tensor, refresh: bool, withdraw: bool,
                disentangle: bool, withdraw_sink: bool) -> io.NodeOutput:
        node = "ChameleonGarmentSwitch"
        check_student_stream(node, stream)
        check_garment_stream(node, stream)
        state = stream.state
        check_vae(node, vae, state.model.config.latent)
        codec = vae_codec(vae)
        new_garment = (encode_condition(codec, state, first_image(node, "garment", garment), garment=True)
                       if refresh else None)
        stream.model.load()
        try:  # disentangle re-encodes the last frame of the continuous decode: the chunks not decoded yet decode here
            last_frame = last_decoded_frame(stream, codec, state.settings.chunk_frames) if disentangle else None
            new = switch_garment(state, new_garment, refresh=refresh, withdraw=withdraw, disentangle=disentangle,
                                 withdraw_sink=withdraw_sink, codec=codec, last_frame=last_frame)
        except ValueError as e:
            if disentangle and state.latent_frames == 0:
                raise rewrap(node, "stream", "no frames yet", e,
                             "put a ChameleonStreamGenerate before the switch, or turn disentangle off") from None
            raise rewrap(node, "garment", "IMAGE", e, "fix the input the message names") from None
        except FloatingPointError as e:  # the VAE decoded NaN/inf frames while disentangling
            raise node_error(node, "vae", "VAE", str(e),
                             "load the VAE in fp32 or bf16, or check the VAE file") from None
        return io.NodeOutput(stream.with_state(new))


class ChameleonPromptSwitch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(**with_aliases(
            node_id="ChameleonPromptSwitch",
            display_name="FashionChameleon Prompt Switch",
            category="FashionChameleon/stream",
            description="Switches the prompt mid-stream, re-caching the frames in the cache under it as the "
                        "student's profile does (LongLive's re-cache; LongLive 2.0: from the next chunk on).",
            inputs=[
                StreamSocket.Input("stream", tooltip="A stream from Start, Generate or a switch."),
                io.Conditioning.Input("positive", tooltip="The new prompt (CLIPTextEncode, CLIPLoader type wan)."),
                io.Boolean.Input("new_shot", default=False, optional=True,
                                 tooltip="LongLive 2.0: the prompt starts a new shot (a scene cut: RoPE offset and "
                                         "shot sink). Other profiles have no shots."),
            ],
            outputs=[StreamSocket.Output(display_name="stream")],
        ))

    @classmethod
    def execute(cls, stream: ChameleonStream, positive, new_shot: bool = False) -> io.NodeOutput:
        node = "ChameleonPromptSwitch"
        check_student_stream(node, stream)
        context = conditioning_tensor(node, "positive", positive)
        stream.model.load()
        try:
            new = switch_prompt(stream.state, context, new_shot=new_shot)
        except ValueError as e:
            raise rewrap(node, "new_shot" if new_shot else "positive", new_shot if new_shot else "CONDITIONING", e,
                         "turn new_shot off (only LongLive 2.0 has shots)" if new_shot
                         else "use the text encoder that matches the student") from None
        return io.NodeOutput(stream.with_state(new))
