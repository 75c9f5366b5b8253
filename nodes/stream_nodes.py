"""Streaming nodes: start a stream, generate segments, switch garment or prompt. Each returns a new stream state."""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from ._core import StreamSettings, rescheduling, streaming
from .conditions import encode_image, vae_family
from .errors import node_error, rewrap
from .images import fit_garment
from .progress import ChunkProgress, interrupted, raise_if_interrupted
from .types import ChameleonConditions, ChameleonModel, ChameleonStream, ConditionsSocket, ModelSocket, StreamSocket

logger = logging.getLogger(__name__)


def conditioning_tensor(node: str, name: str, conditioning) -> torch.Tensor:
    """The prompt features ``[1, L, D]`` inside a ComfyUI CONDITIONING."""
    try:
        tensor = conditioning[0][0]
    except (TypeError, IndexError, KeyError):
        raise node_error(node, name, conditioning, "not a CONDITIONING",
                         "connect CLIPTextEncode fed by a CLIPLoader of type wan") from None
    if len(conditioning) > 1:
        logger.warning("%s: %s holds %d conditionings; using the first", node, name, len(conditioning))
    return tensor


def check_conditions(node: str, model: ChameleonModel, conditions: ChameleonConditions) -> None:
    family = model.config.latent
    if conditions.family != family.name:
        raise node_error(node, "conditions", conditions.family,
                         f"encoded with the {conditions.family} VAE but the model takes {family.name} latents",
                         f"feed ChameleonConditions the {family.name} VAE")


def check_student_stream(node: str, stream: ChameleonStream) -> None:
    if not isinstance(stream, ChameleonStream):
        raise node_error(node, "stream", stream, "not a FashionChameleon stream", "connect ChameleonStreamStart")
    if stream.model.kind != "student":
        raise node_error(node, "stream", stream.model.name, "this stream comes from the bidirectional teacher, which "
                         "cannot stream or switch garments", "start the stream from ChameleonStudentLoader's model")


class ChameleonStreamStart(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ChameleonStreamStart",
            display_name="FashionChameleon Stream Start",
            category="FashionChameleon/stream",
            description="Starts a stream: prefills the reference and garment KV of the causal student.",
            inputs=[
                ModelSocket.Input("student", tooltip="From ChameleonStudentLoader (causal, few-step)."),
                io.Conditioning.Input("positive", tooltip="CLIPTextEncode with a CLIPLoader of type wan (umT5-XXL)."),
                ConditionsSocket.Input("conditions", tooltip="From ChameleonConditions, with the model's VAE."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed of the whole stream; same seed and inputs, same frames."),
                io.Int.Input("steps", default=4, min=1, max=16,
                             tooltip="Denoising steps per chunk (the student is distilled for 4)."),
                io.Int.Input("chunk_frames", default=3, min=1, max=8,
                             tooltip="Latent frames per chunk (3 in training = 12 video frames)."),
                io.Int.Input("cache_frames", default=23, min=4, max=128,
                             tooltip="KV cache length in latent frames: 2 conditions + sink + history (23 in training)."),
                io.Int.Input("sink_chunks", default=1, min=0, max=8,
                             tooltip="Chunks kept forever after the conditions (the attention sink; 1 in the paper)."),
            ],
            outputs=[StreamSocket.Output(display_name="stream")],
        )

    @classmethod
    def execute(cls, student: ChameleonModel, positive, conditions: ChameleonConditions, seed: int, steps: int,
                chunk_frames: int, cache_frames: int, sink_chunks: int) -> io.NodeOutput:
        node = "ChameleonStreamStart"
        if student.kind != "student":
            raise node_error(node, "student", student.name, "this is the bidirectional teacher, it cannot stream",
                             "load a causal student with ChameleonStudentLoader (or sample the teacher with "
                             "ChameleonTeacherSampler)")
        check_conditions(node, student, conditions)
        try:
            settings = StreamSettings(chunk_frames=chunk_frames, cache_frames=cache_frames, sink_chunks=sink_chunks,
                                      steps=steps)
        except ValueError as e:
            raise rewrap(node, "cache_frames", cache_frames, e, "raise cache_frames or lower sink_chunks") from None
        model = student.load()
        state = streaming.start_stream(model, context=conditioning_tensor(node, "positive", positive),
                                       reference=conditions.reference, garment=conditions.garment, seed=seed,
                                       settings=settings)
        return io.NodeOutput(ChameleonStream(state, student))


class ChameleonStreamGenerate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
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
            ],
            outputs=[StreamSocket.Output(display_name="stream"), io.Latent.Output(display_name="segment")],
        )

    @classmethod
    def execute(cls, stream: ChameleonStream, frames: int, steps: int = 0) -> io.NodeOutput:
        node = "ChameleonStreamGenerate"
        check_student_stream(node, stream)
        state = stream.state
        family = state.model.config.latent
        chunk = state.settings.chunk_frames
        one_chunk = family.pixel_frames(chunk) if state.frames == 0 else chunk * family.temporal_stride
        if frames < one_chunk:
            raise node_error(node, "frames", frames, f"fewer than one chunk ({chunk} latent frames = {one_chunk} "
                             f"video frames {'at the start' if state.frames == 0 else 'after the start'})",
                             f"use frames >= {one_chunk}")
        latent_frames = family.latent_frames(frames) if state.frames == 0 else -(-frames // family.temporal_stride)
        stream.model.load()
        progress = ChunkProgress(streaming.chunks_for(state, latent_frames))
        try:
            new, latents = streaming.generate(state, latent_frames, steps=steps or None, progress=progress,
                                              should_stop=interrupted)
        except streaming.NonFiniteChunkError as e:
            raise node_error(node, "stream", stream.model.name, str(e),
                             "load the model with weight_dtype bf16 or fp32") from None
        if latents.shape[2] < latent_frames:
            raise_if_interrupted()
        return io.NodeOutput(ChameleonStream(new, stream.model), {"samples": family.to_raw(latents)})


class ComfyCodec:
    """Decode / single-image encode through ComfyUI's VAE, for reference KV disentangle."""

    def __init__(self, vae) -> None:
        self.vae = vae

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        images = self.vae.decode(raw)  # [B, T, H, W, 3] in 0..1
        if images.ndim == 4:
            images = images.unsqueeze(0)
        return images.permute(0, 4, 1, 2, 3).float() * 2.0 - 1.0

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return encode_image(self.vae, ((image + 1.0) / 2.0).permute(0, 2, 3, 1))


class ChameleonGarmentSwitch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
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
        )

    @classmethod
    def execute(cls, stream: ChameleonStream, vae, garment: torch.Tensor, refresh: bool, withdraw: bool,
                disentangle: bool, withdraw_sink: bool) -> io.NodeOutput:
        node = "ChameleonGarmentSwitch"
        check_student_stream(node, stream)
        state = stream.state
        family = vae_family(node, vae)
        if family.name != state.model.config.latent.name:
            raise node_error(node, "vae", family.name, f"the stream's model takes {state.model.config.latent.name} "
                             "latents", f"connect the {state.model.config.latent.name} VAE")
        b, c, h, w = state.latent_shape
        height, width = h * family.spatial_stride, w * family.spatial_stride
        new_garment = None
        if refresh:
            raw = encode_image(vae, fit_garment(garment, width, height))
            new_garment = family.to_model_space(raw.float())
        if disentangle and not state.history:
            raise node_error(node, "stream", "no frames yet", "disentangle takes the last generated frame",
                             "put a ChameleonStreamGenerate before the switch, or turn disentangle off")
        stream.model.load()
        new = rescheduling.switch_garment(state, new_garment, refresh=refresh, withdraw=withdraw,
                                          disentangle=disentangle, withdraw_sink=withdraw_sink, codec=ComfyCodec(vae))
        return io.NodeOutput(ChameleonStream(new, stream.model))


class ChameleonPromptSwitch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ChameleonPromptSwitch",
            display_name="FashionChameleon Prompt Switch",
            category="FashionChameleon/stream",
            description="Switches the prompt mid-stream, re-caching the frames in the cache under it (LongLive).",
            inputs=[
                StreamSocket.Input("stream", tooltip="A stream from Start, Generate or a switch."),
                io.Conditioning.Input("positive", tooltip="The new prompt (CLIPTextEncode, CLIPLoader type wan)."),
            ],
            outputs=[StreamSocket.Output(display_name="stream")],
        )

    @classmethod
    def execute(cls, stream: ChameleonStream, positive) -> io.NodeOutput:
        node = "ChameleonPromptSwitch"
        check_student_stream(node, stream)
        stream.model.load()
        new = rescheduling.switch_prompt(stream.state, conditioning_tensor(node, "positive", positive))
        return io.NodeOutput(ChameleonStream(new, stream.model))
