"""Stream segments on LATENT sockets: where each sits in its stream, and joining them for one continuous decode
(gaps, overlaps, wrong order and mixed streams refused). Re-exported by :mod:`nodes.adapters`."""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING

import torch

from ..chameleon_core.latents import LatentFamily, latent_family
from .errors import node_error

if TYPE_CHECKING:
    from .types import ChameleonStream

logger = logging.getLogger(__name__)


SEGMENT_KEY = "chameleon_segment"
"""Where a stream segment's LATENT says where it sits: ``{"stream": id, "start": latent frame, "frames": n}``."""


def segment_latent(stream: ChameleonStream, start: int, raw: torch.Tensor) -> dict:
    """A Generate's LATENT output: the raw latents and where they start in their stream."""
    return {"samples": raw, SEGMENT_KEY: {"stream": stream.origin, "start": start, "frames": int(raw.shape[2])}}


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
    return "no stream position" if not info else f"latent frames {info['start']}..{info['start'] + info['frames'] - 1}"


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
            end = a["start"] + a["frames"]
            if b["start"] != end:
                problem = (f"a gap: {prev_name} ends at latent frame {end - 1}, {name} starts at {b['start']}"
                           if b["start"] > end else
                           f"out of order or repeated: {name} starts at latent frame {b['start']}, but {prev_name} "
                           f"already covers up to {end - 1}")
                raise node_error(node, name, _where(seg), problem,
                                 f"connect the segments in stream order, each Generate's segment right after the "
                                 f"one before it (the segment starting at latent frame {end} goes here)")
    first = infos[0]
    joined = torch.cat(parts, dim=2)
    out: dict = {"samples": joined}
    if first is not None:
        out[SEGMENT_KEY] = {**first, "frames": int(joined.shape[2])}
    return out


def latent_segments(node: str, family: LatentFamily, segments: dict[str, object]) -> torch.Tensor:
    """LATENT segments (``{"segment_1": {"samples": ...}, ...}``, unconnected ones None) -> one raw latent video
    ``[B, C, T, h, w]``, in the order of their names, checked by :func:`join_segments`."""
    names = sorted((k for k, v in segments.items() if v is not None), key=lambda k: int(k.rsplit("_", 1)[1]))
    return join_segments(node, family, [(n, segments[n]) for n in names])["samples"]
