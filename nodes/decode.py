"""ChameleonStreamDecode: latent segments -> IMAGE frames, decoded chunk by chunk with carried causal state.

ComfyUI's own VAE decodes a latent video in one go; decoding stream segments separately would leave seams at each
boundary (the causal decoder restarts). This node runs the core's streaming decode (``decoding.decode_chunks``) over
the weights of the ComfyUI VAE it is given: the causal convolution caches carry from chunk to chunk and across
segments, so the frames equal one whole-video decode, while memory stays at one chunk. With the optional tiny
decoder (TAEHV) it decodes with that instead, the same way (carried state, same frame counts), at a small fraction of
the cost and quality: the live path's decoder, not the one for final renders.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from . import adapters
from .errors import node_error
from .progress import ChunkProgress, interrupted, raise_if_interrupted
from .types import ChameleonPreviewDecoder, PreviewDecoderSocket

MAX_SEGMENTS = 8


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
            inputs=[io.Vae.Input("vae", tooltip="The Wan VAE matching the model: the decoder for final renders "
                                                "(it also tells the latent family when a tiny decoder is given).")]
            + segments
            + [io.Int.Input("chunk_frames", default=3, min=1, max=64,
                            tooltip="Latent frames decoded per step (3 = one stream chunk)."),
               PreviewDecoderSocket.Input("decoder", optional=True,
                                          tooltip="Optional tiny decoder (ChameleonTinyDecoderLoader, taew2_2 for "
                                                  "Wan2.2, taew2_1 for Wan2.1): decodes with it instead of the VAE, "
                                                  "much faster but softer. Leave it unconnected for final renders.")],
            outputs=[io.Image.Output(display_name="frames")],
        )

    @classmethod
    def execute(cls, vae, chunk_frames: int = 3, decoder: ChameleonPreviewDecoder | None = None,
                **segments) -> io.NodeOutput:
        node = "ChameleonStreamDecode"
        family = adapters.vae_family(node, vae)
        latents = adapters.latent_segments(node, family, segments)
        if decoder is not None:
            adapters.check_decoder(node, decoder, family)
        total = -(-latents.shape[2] // chunk_frames)
        progress, frames = ChunkProgress(total), []
        with_vae = decoder.decoder if decoder is not None else adapters.streaming_vae(vae)
        chunks = adapters.decode_chunks(with_vae, latents, chunk_frames, should_stop=interrupted)
        try:
            for k, pixels in enumerate(chunks):
                frames.append(adapters.video_to_image(pixels).cpu())
                progress.raw(k, total, latents[:, :, k * chunk_frames : (k + 1) * chunk_frames])
        except FloatingPointError as e:  # NaN/inf frames: never a silent black video
            if decoder is not None:
                raise node_error(node, "decoder", decoder.name, str(e),
                                 "load the tiny decoder in fp32 or bf16, or check its file") from None
            raise node_error(node, "vae", "VAE", str(e),
                             "load the VAE in fp32 or bf16, or check the VAE file") from None
        if len(frames) < total:
            raise_if_interrupted()
        return io.NodeOutput(torch.cat(frames, dim=0))
