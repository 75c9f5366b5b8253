"""Stream segments on LATENT sockets: where each sits in its stream, joining them for one continuous decode (gaps,
overlaps, wrong order and mixed streams refused), and the core's video segments behind them, so a decode reuses what
a garment switch already decoded (``chameleon_core.decoding.VideoSegment``)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

import torch

from ...chameleon_core.decoding import StreamingDecoder, VideoSegment
from ...chameleon_core.latents import LatentFamily, latent_family
from ..errors import node_error
from ..types import ChameleonStream

logger = logging.getLogger(__name__)


MAX_SEGMENTS = 8
"""Segment inputs of one Stream Decode (more: join them with Segment Join)."""
SEGMENT_KEY = "chameleon_segment"
"""Where a stream segment's LATENT says where it sits: ``{"stream": id, "latent_start": first latent frame,
"latent_frames": n, "clip_starts": latent frames where a later clip begins, "video": (the VideoSegments it
joins, in order)}``."""


def segment_latent(stream: ChameleonStream) -> dict:
    """A Generate's LATENT output for the stream it returns: the raw latents of the segment it made
    (``stream.video``) and where they start in their stream."""
    video = stream.video
    return {"samples": video.latents, SEGMENT_KEY: {"stream": stream.origin, "latent_start": video.start,
                                                    "latent_frames": int(video.latents.shape[2]),
                                                    "clip_starts": video.clip_starts, "video": (video,)}}


def next_video_segment(stream: ChameleonStream, raw: torch.Tensor) -> VideoSegment:
    """The video segment of ``raw`` latents a Generate made from ``stream``: it continues the stream's video segment
    when that ends where these start (else its past is unknown: decoded as a new video if ever decoded)."""
    start = stream.state.latent_frames
    previous = stream.video if stream.video is not None and stream.video.end == start else None
    # after a garment switch that started a new clip, the decode restarts here (the segment's first frame not shown)
    return VideoSegment(raw, start, previous, clip_starts=(start,) if stream.state.opens_clip else ())


def last_decoded_frame(stream: ChameleonStream, decoder_vae, chunk_frames: int) -> torch.Tensor | None:
    """The stream's last video frame ``[B, 3, H, W]`` as ``decoder_vae`` decodes it, through the video segments the
    stream carries: each chunk is decoded once per VAE however many switches read it, and Stream Decode reuses it.
    None when the segments do not reach the stream's end (the core then decodes the stream's latents itself)."""
    video = stream.video
    if video is None or video.end != stream.state.latent_frames or not video.end:
        return None
    return video.end_point(decoder_vae, chunk_frames).last_frame


def decoded_pieces(latent: dict, decoder_vae, chunk_frames: int, *, should_stop=None
                   ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A LATENT of stream segments (:func:`latent_segments`) decoded as one continuous video: ``(latents, pixels)``
    pieces in order. Segments a switch (or an earlier decode) already decoded with this VAE come whole and cost
    nothing; the others decode chunk by chunk, continuing from what came before them. A LATENT without video
    segments (from a file, or changed on the way) decodes chunk by chunk from its first frame."""
    videos = segment_videos(latent)
    if videos is not None:
        for video in videos:
            yield from video.decode(decoder_vae, chunk_frames, should_stop=should_stop)
        return
    samples = latent["samples"]
    info = latent.get(SEGMENT_KEY) or {}
    # where it sits in its stream: a stream's later clips restart the decode there, their first frame not shown
    first = int(info.get("latent_start", 0))
    decoder = StreamingDecoder(decoder_vae)
    decoder.latent_frames = done = first
    for pixels in decoder.decode_more(samples, chunk_frames, clip_starts=info.get("clip_starts", ()),
                                      should_stop=should_stop):
        yield samples[:, :, done - first : decoder.latent_frames - first], pixels
        done = decoder.latent_frames


def segment_videos(latent: dict) -> tuple[VideoSegment, ...] | None:
    """The video segments behind a LATENT of stream segments, when its samples are still theirs (a node that changed
    the samples on the way, a latent multiply say, copies the position but not the pixels: None then)."""
    info = latent.get(SEGMENT_KEY) if isinstance(latent, dict) else None
    videos = info.get("video") if info else None
    samples = latent.get("samples")
    if not videos or not isinstance(samples, torch.Tensor):
        return None
    if len(videos) == 1 and samples is videos[0].latents:
        return videos
    theirs = torch.cat([v.latents for v in videos], dim=2)
    return videos if theirs.shape == samples.shape and torch.equal(theirs, samples) else None


def _samples(seg: object) -> torch.Tensor | None:
    samples = seg.get("samples") if isinstance(seg, dict) else None
    return samples if isinstance(samples, torch.Tensor) else None


def _segment_tensor(node: str, name: str, family: LatentFamily, seg: object) -> torch.Tensor:
    samples = _samples(seg)
    if samples is None or samples.ndim != 5 or samples.shape[1] != family.channels:
        got = f"shape {tuple(samples.shape)}" if samples is not None else type(seg).__name__
        raise node_error(node, name, got, f"expected a {family.name} video latent [B, {family.channels}, T, h, w] "
                         "(the VAE's family)",
                         "connect a ChameleonStreamGenerate 'segment' output, and the VAE the model uses")
    return samples


def _check_vae_fits(node: str, family: LatentFamily, named: list[tuple[str, object]]) -> None:
    """When every segment holds the other family's latents, the VAE is what is wrong: say so, with the shapes."""
    shapes = [tuple(s.shape) if (s := _samples(seg)) is not None else None for _, seg in named]
    if any(sh is None or len(sh) != 5 for sh in shapes) or any(sh[1] == family.channels for sh in shapes):
        return
    channels = {sh[1] for sh in shapes}
    try:
        other = latent_family(channels.pop()) if len(channels) == 1 else None
    except ValueError:
        other = None
    if other is not None:
        got = ", ".join(f"{n} {sh}" for (n, _), sh in zip(named, shapes))
        raise node_error(node, "vae", f"a {family.name} VAE ({family.channels} latent channels)",
                         f"the segments hold {other.name} latents ({got})",
                         f"connect the {other.name} VAE (the one the model uses)")


def _where(seg: dict) -> str:
    info = seg.get(SEGMENT_KEY)
    if not info:
        return "no stream position"
    return f"latent frames {info['latent_start']}..{info['latent_start'] + info['latent_frames'] - 1}"


def join_segments(node: str, family: LatentFamily, named: list[tuple[str, object]]) -> dict:
    """Stream segments given in order -> one LATENT (the latents joined along time, the first one's position).

    Segments from ChameleonStreamGenerate carry where they start in their stream; they must come from one stream and
    follow each other with no gap, overlap or change of order. Segments without a position (a LATENT from a file)
    are joined in the order given, with a log line saying so."""
    if not named:
        raise node_error(node, "segment_1", None, "no segment connected",
                         "connect a ChameleonStreamGenerate 'segment' output")
    _check_vae_fits(node, family, named)
    parts, infos = [], []
    for name, seg in named:
        parts.append(_segment_tensor(node, name, family, seg))
        infos.append(seg.get(SEGMENT_KEY))
    shapes = {tuple(p.shape[:2]) + tuple(p.shape[3:]) for p in parts}
    if len(shapes) > 1:
        got = ", ".join(f"{n} {tuple(p.shape)}" for (n, _), p in zip(named, parts))
        raise node_error(node, named[0][0], got, "the segments differ in batch, channels or size",
                         "connect segments of one stream")
    if all(info is None for info in infos):
        if len(named) > 1:
            logger.info("%s: %d segments carry no stream position (not from Stream Generate); joined in input order",
                        node, len(named))
    else:
        for (name, seg), info in zip(named, infos):
            if info is None:
                raise node_error(node, name, "a LATENT with no stream position", "mixed with stream segments",
                                 "connect only ChameleonStreamGenerate 'segment' outputs")
        for (prev_name, prev), (name, seg) in itertools.pairwise(named):
            a, b = prev[SEGMENT_KEY], seg[SEGMENT_KEY]
            if a["stream"] != b["stream"]:
                raise node_error(node, name, _where(seg), f"comes from another stream than {prev_name}",
                                 "decode the segments of one stream together (one Stream Start)")
            end = a["latent_start"] + a["latent_frames"]
            if b["latent_start"] != end:
                problem = (f"a gap: {prev_name} ends at latent frame {end - 1}, {name} starts at {b['latent_start']}"
                           if b["latent_start"] > end else
                           f"out of order or repeated: {name} starts at latent frame {b['latent_start']}, but "
                           f"{prev_name} already covers up to {end - 1}")
                raise node_error(node, name, _where(seg), problem,
                                 f"connect the segments in stream order, each Generate's segment right after the "
                                 f"one before it (the segment starting at latent frame {end} goes here)")
    first = infos[0]
    joined = torch.cat(parts, dim=2)
    out: dict = {"samples": joined}
    if first is not None:
        videos = [info.get("video") for info in infos]
        out[SEGMENT_KEY] = {**first, "latent_frames": int(joined.shape[2]),
                            "clip_starts": tuple(c for info in infos for c in info.get("clip_starts", ())),
                            "video": sum(videos, ()) if all(videos) else None}
    return out


def latent_segments(node: str, family: LatentFamily, segments: dict[str, object]) -> dict:
    """LATENT segments (``{"segment_1": {"samples": ...}, ...}``, unconnected ones None) -> one LATENT (raw latent
    video ``[B, C, T, h, w]`` in ``samples``), in the order of their names, checked by :func:`join_segments`."""
    names = sorted((k for k, v in segments.items() if v is not None), key=lambda k: int(k.rsplit("_", 1)[1]))
    return join_segments(node, family, [(n, segments[n]) for n in names])
