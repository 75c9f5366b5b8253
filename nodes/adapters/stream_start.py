"""Stream Start's inputs -> a core stream: the settings (the student's profile, with the inputs that are not -1 over
it), the prompt features and the conditions, shared by the nodes that start a stream (Stream Start, Live Stream)."""

from __future__ import annotations

import dataclasses

from ...chameleon_core.memory import MemoryBudgetError
from ...chameleon_core.profiles import PROFILES
from ...chameleon_core.residency import CacheResidency
from ...chameleon_core.streaming import StreamState, start_stream
from ..errors import node_error, rewrap
from .checks import check_person_conditions, check_resolution
from .stream_options import apply_model_weighting
from .values import conditioning_tensor


STREAM_INPUTS = ("steps", "chunk_frames", "cache_frames", "sink_chunks")
"""Stream Start's settings inputs; -1 takes the student's profile's value."""


PROFILE_VALUE = -1


RESIDENCY = CacheResidency()
"""The device budget every stream the pack's nodes start shares (and every state derived from them: a workflow's
chain of switches keeps many alive): at most two KV caches on the accelerator, the rest in host memory."""


def start_node_stream(node: str, student, positive, conditions, *, seed: int, steps: int, chunk_frames: int,
                      cache_frames: int, sink_chunks: int) -> StreamState:
    """Stream Start's work, shared by the nodes that start a stream: the settings (the student's profile, with the
    inputs that are not -1 over it), the prompt features, then ``start_stream`` (which checks inputs for NaN/inf
    and the cache against free memory before allocating); every refusal names the input it is about."""
    prof = PROFILES.get(getattr(student, "profile", "fashionchameleon"), PROFILES["fashionchameleon"])
    values = {"steps": steps, "chunk_frames": chunk_frames, "cache_frames": cache_frames, "sink_chunks": sink_chunks}
    overrides = {k: v for k, v in values.items() if v != PROFILE_VALUE}
    try:  # a cache sized in tokens (Self-Forcing, CausVid) gets its frames at the stream's size, below
        settings = prof.settings_for(1, **overrides)
    except ValueError as e:
        raise rewrap(node, "cache_frames", cache_frames, e, "raise cache_frames or lower sink_chunks (-1: the "
                     f"{prof.name} profile's)") from None
    if getattr(student, "shift", None) is not None:  # a native MODEL patched by ModelSamplingSD3
        try:
            settings = dataclasses.replace(settings, shift=student.shift)
        except ValueError as e:
            raise rewrap(node, "student", f"shift {student.shift}", e,
                         "set ModelSamplingSD3's shift above 0 (the student is distilled at 5)") from None
    family = student.config.latent
    if prof.conditions:
        check_person_conditions(node, student, conditions)
        h, w = conditions.reference.shape[-2:]
    else:
        if conditions.has_person:
            raise node_error(node, "conditions", "reference and garment",
                             f"{student.name} streams with the {prof.name} profile ({prof.title}): text-to-video "
                             "without a person or garment",
                             "connect ChameleonVideoSize (size, and a first frame for image-to-video) instead of "
                             "ChameleonConditions, or load the student with the fashionchameleon profile")
        if conditions.first_frame is not None and not prof.image_to_video:
            raise node_error(node, "conditions", "first frame", f"the {prof.name} profile is text-to-video only",
                             "remove the image from ChameleonVideoSize (longlive2 takes a first frame)")
        check_resolution(node, family, conditions.width, conditions.height)
        h, w = family.latent_size(conditions.height, conditions.width)
    if prof.cache_tokens is not None and "cache_frames" not in overrides:
        frames = prof.settings_for(student.config.tokens_per_latent_grid(h, w), **overrides).cache_frames
        settings = dataclasses.replace(settings, cache_frames=frames)
    context = conditioning_tensor(node, "positive", positive)
    if prof.conditions:
        latents = {"reference": conditions.reference, "garment": conditions.garment}
    else:
        latents = {"latent_size": (h, w), "first_frame": conditions.first_frame}
    try:
        state = start_stream(student.load(), context=context, seed=seed, settings=settings, residency=RESIDENCY,
                             **latents)
    except MemoryBudgetError as e:
        raise rewrap(node, "cache_frames", cache_frames, e,
                     "lower cache_frames or the resolution, or free device memory") from None
    except ValueError as e:  # prompt features or condition latents that do not fit the model (named in e)
        raise rewrap(node, "positive", "CONDITIONING", e,
                     "use the text encoder, VAE and images that match the student") from None
    return apply_model_weighting(node, student, state)
