"""Option nodes (issue 16): try-on onto a person video, motion transfer, keyframe-then-fill for long videos,
condition weighting over denoising steps, frame-local attention. Each configures; the core does the work
(``chameleon_core.stream_options``, ``chameleon_core.tryon``)."""

from __future__ import annotations

import dataclasses

import torch
from comfy_api.latest import io

from ..chameleon_core.stream_options import ConditionWeighting
from ..chameleon_core.stream_options import with_options
from ..chameleon_core.tryon import keyframe_then_fill
from .adapters.checks import check_student_stream
from .adapters.stream_options import parse_weight_values, source_video
from .errors import node_error, rewrap
from .progress import ChunkProgress, interrupted, raise_if_interrupted
from .sockets import ModelSocket, StreamSocket, with_aliases
from .types import ChameleonModel, ChameleonStream

STRENGTH_TIP = ("How far each chunk departs from the video: the source is noised to the student's step nearest this "
                "sigma (4 steps: 1, 0.94, 0.83, 0.63) and only the remaining steps run; 0 copies the video.")


def _source(node: str, name: str, stream: ChameleonStream, video, strength: float, mask=None) -> ChameleonStream:
    check_student_stream(node, stream)
    source = source_video(node, name, stream.state, video, strength, mask)
    return stream.with_state(with_options(stream.state, source=source))


class ChameleonVideoTryOn(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(**with_aliases(
            aliases=("video try-on", "viton", "sdedit", "video to video"),
            node_id="ChameleonVideoTryOn",
            display_name="FashionChameleon Video Try-On",
            category="FashionChameleon/options",
            description="Dresses the person of an existing video (VITON-DiT's task): from the stream's next chunk on, "
                        "each chunk starts from the video's latents noised to `strength`, optionally only inside a "
                        "garment mask (outside it the video is kept). Garment switches still apply mid-video.",
            inputs=[
                StreamSocket.Input("stream", tooltip="From ChameleonStreamStart (or later: the video starts at the "
                                                     "stream's next chunk, its first frame skipped so its 4-frame "
                                                     "groups line up with the stream's)."),
                io.Latent.Input("video", tooltip="The person video: its frames (IMAGE batch, scaled to the conditions' "
                                                 "size) through VAEEncode with the stream's VAE."),
                io.Float.Input("strength", default=0.94, min=0.0, max=1.0, step=0.01, tooltip=STRENGTH_TIP),
                io.Mask.Input("mask", optional=True,
                              tooltip="Garment region, 1 = regenerate (one mask, or one per video frame, at the video "
                                      "size). Without it the whole frame is regenerated."),
            ],
            outputs=[StreamSocket.Output(display_name="stream")],
        ))

    @classmethod
    def execute(cls, stream: ChameleonStream, video, strength: float, mask: torch.Tensor | None = None
                ) -> io.NodeOutput:
        return io.NodeOutput(_source("ChameleonVideoTryOn", "video", stream, video, strength, mask))


class ChameleonMotionTransfer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(**with_aliases(
            aliases=("motion transfer", "driving video", "pose"),
            node_id="ChameleonMotionTransfer",
            display_name="FashionChameleon Motion Transfer",
            category="FashionChameleon/options",
            description="The stream follows the motion of a driving video (FastVMT-style): each chunk starts from the "
                        "driving video's latents noised to a lower strength, so layout and motion carry over while "
                        "the reference and garment set the appearance.",
            inputs=[
                StreamSocket.Input("stream", tooltip="From ChameleonStreamStart (the video starts at its next chunk)."),
                io.Latent.Input("driving", tooltip="The driving video through VAEEncode with the stream's VAE, at the "
                                                   "conditions' size."),
                io.Float.Input("strength", default=0.83, min=0.0, max=1.0, step=0.01, tooltip=STRENGTH_TIP),
            ],
            outputs=[StreamSocket.Output(display_name="stream")],
        ))

    @classmethod
    def execute(cls, stream: ChameleonStream, driving, strength: float) -> io.NodeOutput:
        return io.NodeOutput(_source("ChameleonMotionTransfer", "driving", stream, driving, strength))


class ChameleonVideoTryOnKeyframes(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(**with_aliases(
            aliases=("video try-on", "viton", "keyframes", "long video"),
            node_id="ChameleonVideoTryOnKeyframes",
            display_name="FashionChameleon Video Try-On (keyframes, long video)",
            category="FashionChameleon/options",
            description="Long-video try-on by VITON-DiT's interpolated autoregression: keyframe chunks at every "
                        "segment start are generated first, as one stream, then each segment is filled "
                        "autoregressively from its keyframe (its first chunk, kept in the sink).",
            inputs=[
                StreamSocket.Input("stream", tooltip="A fresh stream from ChameleonStreamStart (frame 0)."),
                io.Latent.Input("video", tooltip="The person video through VAEEncode with the stream's VAE."),
                io.Int.Input("segment_chunks", default=4, min=1, max=1000,
                             tooltip="Chunks per segment (one keyframe each); 4 chunks of 3 latent frames = 48 frames."),
                io.Float.Input("strength", default=0.94, min=0.0, max=1.0, step=0.01, tooltip=STRENGTH_TIP),
                io.Mask.Input("mask", optional=True, tooltip="Garment region, 1 = regenerate (see Video Try-On)."),
            ],
            outputs=[io.Latent.Output(display_name="latent")],
        ))

    @classmethod
    def execute(cls, stream: ChameleonStream, video, segment_chunks: int, strength: float,
                mask: torch.Tensor | None = None) -> io.NodeOutput:
        node = "ChameleonVideoTryOnKeyframes"
        check_student_stream(node, stream)
        state = stream.state
        if state.latent_frames:
            raise node_error(node, "stream", f"{state.latent_frames} latent frames generated",
                             "keyframes need a fresh stream", "connect ChameleonStreamStart directly")
        source = source_video(node, "video", state, video, strength, mask)
        c = state.settings.chunk_frames
        if source.latent_frames < c:
            raise node_error(node, "video", f"{source.latent_frames} latent frames",
                             f"shorter than one chunk ({c} latent frames)", "give a longer video")
        if segment_chunks < 1:
            raise node_error(node, "segment_chunks", segment_chunks, "must be >= 1", "use e.g. 4")
        chunks = source.latent_frames // c
        progress = ChunkProgress(chunks + -(-chunks // segment_chunks))
        stream.model.load()
        out, _ = keyframe_then_fill(state, source.latents, segment_chunks=segment_chunks, strength=strength,
                                    mask=source.mask, progress=progress.bar.update_absolute, should_stop=interrupted)
        raise_if_interrupted()
        return io.NodeOutput({"samples": state.model.config.latent.to_raw(out)})


class ChameleonConditionWeighting(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(**with_aliases(
            aliases=("condition weighting", "customcrafter", "reference strength"),
            node_id="ChameleonConditionWeighting",
            display_name="FashionChameleon Condition Weighting",
            category="FashionChameleon/options",
            description="CustomCrafter's dynamic condition weighting: an additive logit bias on the reference and "
                        "garment keys, one value per denoising step - weak early (motion), full late (detail). "
                        "Applies to the teacher sampler and the streams started with the returned model.",
            inputs=[
                ModelSocket.Input("model", tooltip="A teacher or student model."),
                io.Float.Input("early_bias", default=-2.0, min=-20.0, max=20.0, step=0.1,
                               tooltip="Logit bias at the first step (negative: the video attends less to the "
                                       "reference and garment). 0 everywhere leaves outputs unchanged."),
                io.Float.Input("late_bias", default=0.0, min=-20.0, max=20.0, step=0.1,
                               tooltip="Logit bias at the last step (0: full condition)."),
                io.Combo.Input("ramp", options=["linear", "cosine", "step"], default="linear",
                               tooltip="How the bias goes from early to late; step: early for the first half."),
                io.String.Input("schedule", default="", optional=True,
                                tooltip="Explicit per-step values, e.g. '-3, -2, -1, 0' (must have exactly the "
                                        "sampler's steps); empty uses the ramp."),
            ],
            outputs=[ModelSocket.Output(display_name="model")],
        ))

    @classmethod
    def execute(cls, model: ChameleonModel, early_bias: float, late_bias: float, ramp: str,
                schedule: str = "") -> io.NodeOutput:
        node = "ChameleonConditionWeighting"
        if not isinstance(model, ChameleonModel):
            raise node_error(node, "model", model, "not a FashionChameleon model", "connect a Chameleon loader")
        values = parse_weight_values(node, schedule or "")
        try:
            weighting = ConditionWeighting(early_bias, late_bias, ramp, values)
        except ValueError as e:
            raise rewrap(node, "early_bias", early_bias, e, "use finite biases, e.g. -2 and 0") from None
        return io.NodeOutput(dataclasses.replace(model, condition_weighting=weighting))


class ChameleonLocalAttention(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(**with_aliases(
            aliases=("local attention", "window", "speed"),
            node_id="ChameleonLocalAttention",
            display_name="FashionChameleon Local Attention",
            category="FashionChameleon/options",
            description="FastVMT-style frame-local attention, a speed option: each chunk attends to the conditions, "
                        "the sink and only the nearest k latent frames before it instead of the whole cache window.",
            inputs=[
                StreamSocket.Input("stream", tooltip="Any stream; applies to the chunks generated from it."),
                io.Int.Input("local_frames", default=6, min=0, max=1024,
                             tooltip="k: history latent frames each chunk sees (3 = one chunk); 0 = the full window."),
            ],
            outputs=[StreamSocket.Output(display_name="stream")],
        ))

    @classmethod
    def execute(cls, stream: ChameleonStream, local_frames: int) -> io.NodeOutput:
        node = "ChameleonLocalAttention"
        check_student_stream(node, stream)
        if isinstance(local_frames, bool) or not isinstance(local_frames, int) or local_frames < 0:
            raise node_error(node, "local_frames", local_frames, "k must be an integer >= 1 (0 = full window)",
                             "use e.g. 3 or 6")
        state = with_options(stream.state, local_frames=local_frames or None)
        return io.NodeOutput(stream.with_state(state))
