"""Node inputs of the stream options (issue 16: source video, condition weighting, local attention) turned into
core values, every mismatch named."""

from __future__ import annotations

import logging
import math

import torch

from ...chameleon_core.stream_options import SourceVideo, latent_mask, with_options
from ...chameleon_core.streaming import StreamState
from ..errors import node_error, rewrap

logger = logging.getLogger(__name__)


def apply_model_weighting(node: str, student, state: StreamState) -> StreamState:
    """The stream gets the condition weighting a ChameleonConditionWeighting node set on its model handle."""
    weighting = getattr(student, "condition_weighting", None)
    if weighting is None:
        return state
    try:
        return with_options(state, condition_weights=weighting)
    except ValueError as e:
        raise rewrap(node, "student", student.name, e,
                     "make the condition weighting's schedule one value per step of the stream") from None


# -------------------------------------------------------------------------------------------------------------------
# Stream options (issue 16): source video, condition weighting, local attention
# -------------------------------------------------------------------------------------------------------------------


def check_strength(node: str, name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise node_error(node, name, value, "the strength must lie in [0, 1] (0 keeps the source, 1 ignores it)",
                         "use e.g. 0.94 for try-on, 0.83 for motion transfer")
    return float(value)


def source_video(node: str, name: str, state: StreamState, latent, strength, mask=None) -> SourceVideo:
    """A LATENT video (VAEEncode of the person / driving video) and an optional MASK -> a core ``SourceVideo``
    placed at the stream's next frame, with every mismatch named (channels, size, mask size and frames)."""
    family = state.model.config.latent
    if not state.settings.conditions:
        raise node_error(node, "stream", "no reference / garment", "try-on and motion transfer dress the stream's "
                         "person in its garment, and this stream (a public text-/image-to-video student) has neither",
                         "use a FashionChameleon stream (ChameleonConditions)")
    samples = latent.get("samples") if isinstance(latent, dict) else None
    _, c, h, w = state.latent_shape
    if not isinstance(samples, torch.Tensor) or samples.ndim != 5 or samples.shape[1] != c:
        got = str(tuple(samples.shape)) if isinstance(samples, torch.Tensor) else type(latent).__name__
        raise node_error(node, name, got, f"expected a {family.name} video latent [1, {c}, T, h, w]",
                         "encode the video (an IMAGE batch of its frames) with VAEEncode and the stream's VAE")
    if tuple(samples.shape[3:]) != (h, w):
        px = (samples.shape[3] * family.spatial_stride, samples.shape[4] * family.spatial_stride)
        raise node_error(node, name, f"{px[1]}x{px[0]} pixels", f"the stream is "
                         f"{w * family.spatial_stride}x{h * family.spatial_stride} (the conditions' width x height)",
                         "scale the video frames to the conditions' size (ImageScale) before VAEEncode")
    strength = check_strength(node, "strength", strength)
    lat_frames = samples.shape[2]
    m = None
    if mask is not None:
        mask = mask if mask.ndim == 3 else mask[None]
        want_px = (h * family.spatial_stride, w * family.spatial_stride)
        if tuple(mask.shape[1:]) != want_px:
            raise node_error(node, "mask", f"{mask.shape[2]}x{mask.shape[1]}", f"the video is "
                             f"{want_px[1]}x{want_px[0]}", "make the mask the video's size (or scale it)")
        frames_ok = (1, family.video_frames(lat_frames))
        if mask.shape[0] not in frames_ok:
            raise node_error(node, "mask", f"{mask.shape[0]} frames", f"a mask has 1 frame (all frames) or one per "
                             f"video frame ({frames_ok[1]})", "give one mask, or one per frame of the video")
        m = latent_mask(mask.float().cpu(), lat_frames, h, w, family.temporal_stride)
    if state.latent_frames > 0:
        # Attached mid-stream: the video's latent 0 encodes its first frame alone, while every stream latent after
        # the first chunk covers 4 frames; drop it so the video's 4-frame groups land on the stream's.
        if lat_frames < 2:
            raise node_error(node, name, f"{lat_frames} latent frame", "attached after the stream's first chunk, the "
                             "video needs more than its first frame", "give a longer video, or attach it at Stream Start")
        samples = samples[:, :, 1:]
        if m is not None and m.shape[2] > 1:
            m = m[:, :, 1:]
        logger.info("%s: attached at stream latent frame %d: the video's first frame (its own latent) is skipped so "
                    "its 4-frame groups line up with the stream's", node, state.latent_frames)
    return SourceVideo(family.to_model_space(samples.float().cpu()), strength, m, offset=state.latent_frames)


def parse_weight_values(node: str, text: str) -> tuple[float, ...] | None:
    """``"-3, -2, -1, 0"`` -> (-3.0, -2.0, -1.0, 0.0); an empty string -> None (use the ramp)."""
    if not text.strip():
        return None
    try:
        values = tuple(float(v) for v in text.replace(";", ",").split(",") if v.strip())
    except ValueError:
        raise node_error(node, "schedule", text, "not a comma-separated list of numbers",
                         "write one logit bias per step, e.g. -3, -2, -1, 0 (or leave it empty)") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise node_error(node, "schedule", text, "the values must be finite numbers", "e.g. -3, -2, -1, 0")
    return values


def teacher_weights(node: str, teacher, steps: int) -> tuple[float, ...] | None:
    """The teacher handle's condition weighting resolved to the sampler's steps (a length mismatch is named)."""
    weighting = getattr(teacher, "condition_weighting", None)
    if weighting is None:
        return None
    try:
        return weighting.for_steps(steps, "the teacher sampler")
    except ValueError as e:
        raise rewrap(node, "steps", steps, e, "set steps to the schedule's length, or leave the schedule empty "
                     "to use the early/late ramp") from None
