"""ChameleonStreamDecode: latent segments -> IMAGE frames, decoded chunk by chunk with carried causal state.

ComfyUI's own VAE decodes a latent video in one go; decoding stream segments separately would leave seams at each
boundary (the causal decoder restarts). This node reuses the weights of the ComfyUI VAE it is given in the core's
streaming decoder, which carries its causal convolution caches from chunk to chunk and across segments: the frames
equal one whole-video decode, while memory stays at one chunk.
"""

from __future__ import annotations

import weakref

import torch
from comfy_api.latest import io

import comfy.model_management as mm

from ._core import vae as core_vae
from .conditions import vae_family
from .errors import node_error
from .images import video_to_image
from .progress import ChunkProgress, interrupted, raise_if_interrupted

MAX_SEGMENTS = 8
_streaming_vaes: "weakref.WeakKeyDictionary[object, core_vae.WanVAE]" = weakref.WeakKeyDictionary()


def streaming_vae(vae) -> core_vae.WanVAE:
    """The core streaming VAE over a ComfyUI VAE's weights (built once per VAE object)."""
    if vae not in _streaming_vaes:
        device = mm.get_torch_device()
        dtype = getattr(vae, "vae_dtype", torch.float32)
        _streaming_vaes[vae] = core_vae.vae_from_state_dict(vae.get_sd(), device=device, dtype=dtype)
    return _streaming_vaes[vae]


class ChameleonStreamDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        segments = [
            io.Latent.Input(f"segment_{i}", optional=i > 1,
                            tooltip=f"Segment {i} of the stream (a ChameleonStreamGenerate 'segment' output), in "
                                    "order; segments are decoded as one continuous video.")
            for i in range(1, MAX_SEGMENTS + 1)
        ]
        return io.Schema(
            node_id="ChameleonStreamDecode",
            display_name="FashionChameleon Stream Decode",
            category="FashionChameleon/stream",
            description="Decodes one or more stream segments chunk by chunk as a single continuous video (no seams "
                        "at segment or switch boundaries); memory stays at one chunk.",
            inputs=[io.Vae.Input("vae", tooltip="The Wan VAE matching the model.")] + segments
            + [io.Int.Input("chunk_frames", default=3, min=1, max=64,
                            tooltip="Latent frames decoded per step (3 = one stream chunk).")],
            outputs=[io.Image.Output(display_name="frames")],
        )

    @classmethod
    def execute(cls, vae, chunk_frames: int = 3, **segments) -> io.NodeOutput:
        node = "ChameleonStreamDecode"
        family = vae_family(node, vae)
        parts = []
        for i in range(1, MAX_SEGMENTS + 1):
            seg = segments.get(f"segment_{i}")
            if seg is None:
                continue
            samples = seg["samples"] if isinstance(seg, dict) else None
            if samples is None or samples.ndim != 5 or samples.shape[1] != family.channels:
                got = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(seg).__name__
                raise node_error(node, f"segment_{i}", got, f"expected a {family.name} video latent "
                                 f"[B, {family.channels}, T, h, w]", "connect a ChameleonStreamGenerate segment "
                                 "and the VAE the model uses")
            parts.append(samples)
        if not parts:
            raise node_error(node, "segment_1", None, "no segment connected", "connect a stream segment")
        latents = torch.cat(parts, dim=2)
        decoder = streaming_vae(vae)
        total = -(-latents.shape[2] // chunk_frames)
        progress = ChunkProgress(total)
        frames, state = [], None
        for k in range(total):
            if interrupted():
                raise_if_interrupted()
            chunk = latents[:, :, k * chunk_frames : (k + 1) * chunk_frames]
            pixels, state = decoder.decode_chunk(chunk.to(decoder.device, decoder.dtype), state, consume=True)
            frames.append(video_to_image(pixels).cpu())
            progress.raw(k, total, chunk)
        return io.NodeOutput(torch.cat(frames, dim=0))
