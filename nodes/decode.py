"""ChameleonStreamDecode: latent segments -> IMAGE frames, decoded chunk by chunk with carried causal state; and
ChameleonSegmentJoin, which joins segments into one so a stream of any number of segments decodes as one video.

ComfyUI's own VAE decodes a latent video in one go; decoding stream segments separately would leave seams at each
boundary (the causal decoder restarts). The decode node runs the core's streaming decode
(``decoding.VideoSegment``, ``decoding.decode_chunks``) over the very weights of the ComfyUI VAE it is given (no
copy: ComfyUI's model management loads them on its device and accounts for them, ``adapters.vae.ComfyCodec``): the
causal convolution caches carry from chunk to chunk and across segments, so the frames equal one whole-video decode, while memory stays at one chunk. With the optional tiny
decoder (TAEHV) it decodes with that instead, the same way, at a small fraction of the cost and quality: the live
path's decoder, not the one for final renders. What a garment switch already decoded of the segments (its
disentangle reads the last frame of the continuous decode) is reused, not decoded again.

Segments from Stream Generate carry where they start in their stream; both nodes refuse gaps, overlaps, wrong order
and segments of different streams with an error naming the segment and the latent frames.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..chameleon_core.config import MAX_CHUNK_FRAMES, StreamSettings
from ..chameleon_core.latents import latent_family
from .adapters.segments import MAX_SEGMENTS, decoded_pieces, join_segments, latent_segments
from .adapters.tiny_decoder import check_decoder
from .adapters.vae import vae_codec, vae_family
from .adapters.values import video_to_image
from .errors import node_error
from .progress import ChunkProgress, interrupted, raise_if_interrupted
from .sockets import PreviewDecoderSocket, with_aliases
from .types import ChameleonPreviewDecoder

DEFAULT_CHUNK_FRAMES = StreamSettings().chunk_frames
"""Latent frames decoded per step by default: one chunk of the default stream."""
SEGMENT_TOOLTIP = ("a ChameleonStreamGenerate 'segment' output (or a ChameleonSegmentJoin of several), in stream "
                   "order; gaps, overlaps and wrong order are refused.")


class ChameleonStreamDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        segments = [
            io.Latent.Input(f"segment_{i}", optional=i > 1,
                            tooltip=f"Segment {i} of the stream: {SEGMENT_TOOLTIP} More than {MAX_SEGMENTS}: join "
                                    "them with ChameleonSegmentJoin.")
            for i in range(1, MAX_SEGMENTS + 1)
        ]
        return io.Schema(**with_aliases(
            node_id="ChameleonStreamDecode",
            display_name="FashionChameleon Stream Decode",
            category="FashionChameleon/stream",
            description="Decodes one or more stream segments chunk by chunk as a single continuous video (no seams "
                        "at segment or switch boundaries) with the VAE's own weights under ComfyUI's model "
                        "management; memory stays at one chunk. Refuses gaps and wrong order.",
            inputs=[io.Vae.Input("vae", tooltip="The Wan VAE matching the model: the decoder for final renders "
                                                "(it also tells the latent family when a tiny decoder is given).")]
            + segments
            + [io.Int.Input("chunk_frames", default=DEFAULT_CHUNK_FRAMES, min=1, max=MAX_CHUNK_FRAMES,
                            tooltip=f"Latent frames decoded per step ({DEFAULT_CHUNK_FRAMES} = one stream chunk); "
                                    "the frames are the same for any value, only memory changes."),
               PreviewDecoderSocket.Input("decoder", optional=True,
                                          tooltip="Optional tiny decoder (ChameleonTinyDecoderLoader, taew2_2 for "
                                                  "Wan2.2, taew2_1 for Wan2.1): decodes with it instead of the VAE, "
                                                  "much faster but softer. Leave it unconnected for final renders.")],
            outputs=[io.Image.Output(display_name="frames")],
        ))

    @classmethod
    def execute(cls, vae, chunk_frames: int = DEFAULT_CHUNK_FRAMES, decoder: ChameleonPreviewDecoder | None = None,
                **segments) -> io.NodeOutput:
        node = "ChameleonStreamDecode"
        family = vae_family(node, vae)  # the VAE first: a wrong VAE is named as such, not as a segment
        joined = latent_segments(node, family, segments)
        if decoder is not None:
            check_decoder(node, decoder, family)
        latent_frames = joined["samples"].shape[2]
        total = -(-latent_frames // chunk_frames)
        progress, frames, done = ChunkProgress(total), [], 0
        with_vae = decoder.decoder if decoder is not None else vae_codec(vae)
        try:  # what a garment switch already decoded with this VAE comes whole; the rest decodes chunk by chunk
            for latents, pixels in decoded_pieces(joined, with_vae, chunk_frames, should_stop=interrupted):
                frames.append(video_to_image(pixels).cpu())
                done += latents.shape[2]
                progress.raw(-(-done // chunk_frames) - 1, total, latents)
        except FloatingPointError as e:  # NaN/inf frames: never a silent black video
            if decoder is not None:
                raise node_error(node, "decoder", decoder.name, str(e),
                                 "load the tiny decoder in fp32 or bf16, or check its file") from None
            raise node_error(node, "vae", "VAE", str(e),
                             "load the VAE in fp32 or bf16, or check the VAE file") from None
        if done < latent_frames:
            raise_if_interrupted()
        return io.NodeOutput(torch.cat(frames, dim=0))


class ChameleonSegmentJoin(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(**with_aliases(
            node_id="ChameleonSegmentJoin",
            display_name="FashionChameleon Segment Join",
            category="FashionChameleon/stream",
            description="Joins two consecutive segments of one stream into one (chain it for any number of "
                        "segments; Stream Decode takes the result like any segment). Refuses gaps and wrong order.",
            inputs=[io.Latent.Input("first", tooltip=f"The earlier segment: {SEGMENT_TOOLTIP}"),
                    io.Latent.Input("second", tooltip="The segment that follows it directly in the same stream.")],
            outputs=[io.Latent.Output(display_name="segment")],
        ))

    @classmethod
    def execute(cls, first, second) -> io.NodeOutput:
        node = "ChameleonSegmentJoin"
        samples = first.get("samples") if isinstance(first, dict) else None
        if not isinstance(samples, torch.Tensor) or samples.ndim != 5:
            got = f"shape {tuple(samples.shape)}" if isinstance(samples, torch.Tensor) else type(first).__name__
            raise node_error(node, "first", got, "not a video latent [B, C, T, h, w]",
                             "connect a ChameleonStreamGenerate 'segment' output")
        try:
            family = latent_family(int(samples.shape[1]))
        except ValueError as e:
            raise node_error(node, "first", f"shape {tuple(samples.shape)}", str(e),
                             "connect a ChameleonStreamGenerate 'segment' output") from None
        return io.NodeOutput(join_segments(node, family, [("first", first), ("second", second)]))
