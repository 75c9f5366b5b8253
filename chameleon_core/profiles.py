"""Stream profiles: how each public causal Wan student streams, as the :class:`StreamSettings` of its own loop.

A causal student only works with the loop it was trained with: its chunk (block) size, the frames its KV cache
keeps (window, sink), its denoising steps and how they are fed, and what a prompt switch does. A profile names one
such loop; :func:`detect_profile` picks it from what a checkpoint says about itself (metadata, file name, shapes),
and the loaders, the command line (``--profile``) and the benchmark can pick one by name.

Where each rule comes from (file and function of each project, read at the commits named in ``docs/profiles.md``):

- ``fashionchameleon``: this pack's defaults (the authors' ``stream_wan22_ic_inference.py``).
- ``longlive2``: NVlabs/LongLive ``main``: ``configs/inference.yaml`` (8-frame blocks, local window 32, sink 8,
  4 steps, shift 5, multi-shot sink, RoPE offset 8), ``pipeline/causal_diffusion_inference.py``
  (``CausalDiffusionInferencePipeline._inference_inner``: Wan's flow UniPC per block, ``_pin_current_chunk``,
  ``_is_shot_boundary``), ``wan_5b/modules/causal_model.py`` (``CausalWanSelfAttention.forward``: rolling cache
  with a global and a pinned sink), ``configs/inference_i2v.yaml`` (image-to-video first frame).
- ``longlive1``: NVlabs/LongLive ``v1.0``: ``configs/longlive_inference.yaml`` (3-frame blocks, local attention
  12, sink 3, steps [1000, 750, 500, 250] warped at shift 5), ``pipeline/interactive_causal_inference.py``
  (``_recache_after_switch``), ``wan/modules/causal_model.py`` (``CausalWanSelfAttention.forward``).
- ``self_forcing``: guandeh17/Self-Forcing: ``configs/self_forcing_dmd.yaml``, ``pipeline/causal_inference.py``
  (``CausalInferencePipeline.inference``: a KV cache of 32760 tokens, global causal attention).
- ``causvid``: tianweiy/CausVid: ``configs/wan_causal_dmd.yaml`` (steps [1000, 757, 522], unwarped, shift 8),
  ``causvid/models/wan/causal_inference.py`` (``InferencePipeline.inference``).

The tests re-implement each project's loop independently and compare (``tests/test_profile_parity.py``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .config import MAX_CACHE_FRAMES, StreamSettings, WanConfig
from .model import WanModel

logger = logging.getLogger(__name__)

PROFILE_METADATA_KEY = "fashionchameleon.profile"
"""Safetensors metadata naming a checkpoint's stream profile (written by ``save_transformer(profile=...)``)."""


@dataclass(frozen=True)
class PublicFile:
    """A file a project publishes, as a user downloads it."""

    name: str
    """The file's name as published."""
    url: str
    """Where to download it."""
    folder: str
    """ComfyUI models folder: ``diffusion_models`` (the transformer) or ``loras`` (a LoRA applied on loading)."""


@dataclass(frozen=True)
class StreamProfile:
    """One student's streaming loop and what it needs."""

    name: str
    title: str
    repository: str
    """The project's public repository (and branch) the rules come from."""
    settings: StreamSettings
    """The loop at the native resolution (``cache_frames`` there, for ``cache_tokens`` profiles)."""
    model: str
    """The :data:`~chameleon_core.config.PRESETS` name of the architecture it was trained on."""
    native_size: tuple[int, int]
    """Native ``(width, height)`` in pixels."""
    fps: int
    """Frame rate of its videos."""
    image_to_video: bool = False
    """Takes a first-frame image (frame 0 held to it)."""
    cache_tokens: int | None = None
    """The project sizes its cache in tokens (32760: Self-Forcing, CausVid); the frames follow from the resolution."""
    weights_entry: str | None = None
    """The state dict the project's inference loads from a training ``.pt`` (``generator`` / ``generator_ema``)."""
    lora_alpha_over_rank: float = 1.0
    """LoRA scale (alpha / rank) of the project's adapter config (both LongLive releases: alpha = rank)."""
    files: tuple[PublicFile, ...] = ()
    published_speed: str = ""
    """The project's own speed figure, as its README states it (for the benchmark table)."""

    @property
    def conditions(self) -> bool:
        return self.settings.conditions

    def settings_for(self, tokens_per_frame: int, **changes) -> StreamSettings:
        """The settings at a resolution with ``tokens_per_frame`` tokens per latent frame (a token-sized cache holds
        ``cache_tokens // tokens_per_frame`` frames, at most :data:`~chameleon_core.config.MAX_CACHE_FRAMES`), with
        ``changes`` applied."""
        settings = self.settings
        if self.cache_tokens is not None:
            frames = min(self.cache_tokens // max(tokens_per_frame, 1), MAX_CACHE_FRAMES)
            frames -= (frames - settings.cond_frames - settings.sink_frames) % settings.chunk_frames
            frames = max(frames, settings.cond_frames + settings.sink_frames + settings.chunk_frames)
            settings = replace(settings, cache_frames=frames)
        return replace(settings, **changes) if changes else settings


_HF = "https://huggingface.co"

PROFILES: dict[str, StreamProfile] = {
    "fashionchameleon": StreamProfile(
        name="fashionchameleon",
        title="FashionChameleon (reference + garment in context)",
        repository="this pack (FashionChameleon, arXiv 2605.15824)",
        settings=StreamSettings(),
        model="wan2.2-ti2v-5b",
        native_size=(704, 1280),
        fps=24,
    ),
    "longlive2": StreamProfile(
        name="longlive2",
        title="LongLive 2.0 (Wan2.2-TI2V-5B)",
        repository="https://github.com/NVlabs/LongLive (main)",
        settings=StreamSettings(chunk_frames=8, cache_frames=32, sink_chunks=1, steps=4, shift=5.0, conditions=False,
                                sampler="unipc", timestep_input="exact", shot_rope_offset=8, shot_sink=True,
                                prompt_recache="none"),
        model="wan2.2-ti2v-5b",
        native_size=(1280, 704),
        fps=24,
        image_to_video=True,
        weights_entry="generator",
        files=(
            PublicFile("model_bf16.pt", f"{_HF}/Efficient-Large-Model/LongLive-2.0-5B/resolve/main/model_bf16.pt",
                       "diffusion_models"),
        ),
        published_speed="24.8 FPS (LongLive-2.0-5B, README models table)",
    ),
    "longlive1": StreamProfile(
        name="longlive1",
        title="LongLive 1.0 (Wan2.1-T2V-1.3B)",
        repository="https://github.com/NVlabs/LongLive (v1.0)",
        settings=StreamSettings(chunk_frames=3, cache_frames=12, sink_chunks=1, steps=4, shift=5.0, conditions=False,
                                timestep_input="exact", prompt_recache="window"),
        model="wan2.1-t2v-1.3b",
        native_size=(832, 480),
        fps=16,
        weights_entry="generator",
        files=(
            PublicFile("longlive_base.pt", f"{_HF}/Efficient-Large-Model/LongLive-1.3B/resolve/main/models/"
                       "longlive_base.pt", "diffusion_models"),
            PublicFile("lora.pt", f"{_HF}/Efficient-Large-Model/LongLive-1.3B/resolve/main/models/lora.pt", "loras"),
        ),
        published_speed="20.7 FPS on one H100 (LongLive-1.3B, README)",
    ),
    "self_forcing": StreamProfile(
        name="self_forcing",
        title="Self-Forcing (Wan2.1-T2V-1.3B, DMD)",
        repository="https://github.com/guandeh17/Self-Forcing",
        settings=StreamSettings(chunk_frames=3, cache_frames=21, sink_chunks=0, steps=4, shift=5.0, conditions=False,
                                timestep_input="exact"),
        model="wan2.1-t2v-1.3b",
        native_size=(832, 480),
        fps=16,
        cache_tokens=32760,
        weights_entry="generator_ema",
        files=(
            PublicFile("self_forcing_dmd.pt", f"{_HF}/gdhe17/Self-Forcing/resolve/main/checkpoints/self_forcing_dmd.pt",
                       "diffusion_models"),
        ),
        published_speed="real time on one RTX 4090 (README)",
    ),
    "causvid": StreamProfile(
        name="causvid",
        title="CausVid (Wan2.1-T2V-1.3B, autoregressive)",
        repository="https://github.com/tianweiy/CausVid",
        settings=StreamSettings(chunk_frames=3, cache_frames=21, sink_chunks=0, steps=3, shift=8.0, conditions=False,
                                student_timesteps=(1000, 757, 522), warp=False, timestep_input="exact"),
        model="wan2.1-t2v-1.3b",
        native_size=(832, 480),
        fps=16,
        cache_tokens=32760,
        weights_entry="generator",
        files=(
            PublicFile("model.pt", f"{_HF}/tianweiy/CausVid/resolve/main/autoregressive_checkpoint/model.pt",
                       "diffusion_models"),
        ),
    ),
}
"""Every stream profile by name."""

PROFILE_NAMES = tuple(PROFILES)
AUTO = "auto"
"""Pick the profile from the checkpoint (:func:`detect_profile`)."""

NAME_HINTS: tuple[tuple[str, str], ...] = (
    ("self_forcing", "self_forcing"), ("self-forcing", "self_forcing"), ("selfforcing", "self_forcing"),
    ("causvid", "causvid"), ("longlive2", "longlive2"), ("longlive-2", "longlive2"), ("longlive_2", "longlive2"),
    ("fashionchameleon", "fashionchameleon"),
)
"""File-name fragments that name a profile (checked in order; ``longlive`` alone is decided by the shapes)."""

LONGLIVE_MERGED_FORMAT = "longlive_generator_merged_lora"
"""``checkpoint_format`` of LongLive 2.0's merged generator (``scripts/merge_lora_generator.py``)."""


def profile(name: str) -> StreamProfile:
    """A profile by name, with an error listing the names."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown stream profile {name!r}; choose one of {list(PROFILES)} (or {AUTO!r} to pick it "
                         "from the checkpoint)") from None


def profile_from_metadata(metadata: Mapping[str, str], name: str, config: WanConfig) -> tuple[str, str] | None:
    """``(profile, why)`` from what a checkpoint says about itself (metadata, then its file name), or None."""
    stated = metadata.get(PROFILE_METADATA_KEY)
    if stated is not None:
        profile(stated)  # refuses an unknown name
        return stated, f"metadata {PROFILE_METADATA_KEY}={stated}"
    fmt = metadata.get("checkpoint_format", "")
    if fmt.startswith("longlive"):  # LongLive 2.0's merge script writes it; its release is Wan2.2-TI2V-5B only
        found = "longlive2" if config.in_dim == 48 else "longlive1"
        return found, f"checkpoint_format={fmt} (a LongLive generator, {config.name})"
    lower = name.lower()
    for fragment, found in NAME_HINTS:
        if fragment in lower:
            return found, f"file name contains {fragment!r}"
    if "longlive" in lower:
        found = "longlive2" if config.in_dim == 48 else "longlive1"
        return found, f"file name contains 'longlive' and the shapes are {config.name} ({config.in_dim} channels)"
    return None


def detect_profile(path: str | os.PathLike[str]) -> tuple[str, str]:
    """The stream profile of a transformer checkpoint and why: ``(name, reason)``.

    In order: the ``fashionchameleon.profile`` metadata; LongLive 2.0's merged-file entries (``checkpoint_format``,
    ``model_name``); a file name naming the project (``self_forcing``, ``causvid``, ``longlive`` + the shapes:
    Wan2.2 -> LongLive 2.0, Wan2.1 -> LongLive 1.0); otherwise ``fashionchameleon`` (pick another on the loader or
    with ``--profile``).
    """
    from .checkpoints import inspect_checkpoint  # the checkpoint package imports nothing from here

    info = inspect_checkpoint(path)
    found = profile_from_metadata(info.metadata, Path(path).name, info.config)
    if found is not None:
        return found
    return "fashionchameleon", "the checkpoint does not say which student it is (the pack's default)"


def resolve_profile(requested: str, path: str | os.PathLike[str] | None) -> tuple[StreamProfile, str]:
    """The profile to stream with: ``requested`` by name, or for :data:`AUTO` the checkpoint's (:func:`detect_profile`;
    ``fashionchameleon`` without a file). Returns ``(profile, why)``."""
    if requested != AUTO:
        return profile(requested), "chosen"
    if path is None:
        return PROFILES["fashionchameleon"], "no checkpoint file to read it from (the pack's default)"
    name, why = detect_profile(path)
    return PROFILES[name], why


def check_model_fits(prof: StreamProfile, config: WanConfig) -> None:
    """Log a warning when the model's architecture is not the one the profile was trained on (it still runs: a
    tiny test model, a pruned one)."""
    want = prof.model
    if config.name != want and config.name != "custom" and not config.name.startswith("tiny"):
        logger.warning("the %s profile streams %s students, but this model is %s; its outputs are unlikely to be "
                       "useful", prof.name, want, config.name)


def load_student(
    path: str | os.PathLike[str],
    *,
    profile_name: str = AUTO,
    lora: str | os.PathLike[str] | None = None,
    dtype: torch.dtype = torch.bfloat16,
    device: torch.device | str = "cpu",
) -> tuple[WanModel, StreamProfile, str]:
    """Load a causal student as its project publishes it and pick its profile: ``(model, profile, why)``.

    ``profile_name``: a name, or :data:`AUTO` (:func:`detect_profile`). A training ``.pt`` gives the state dict the
    profile's project infers with (``weights_entry``); ``lora`` (LongLive's ``lora.pt``) is merged while loading at
    the profile's alpha / rank.
    """
    from .checkpoints import load_transformer

    prof, why = resolve_profile(profile_name, path)
    model = load_transformer(path, dtype=dtype, device=device, lora=lora, lora_scale=prof.lora_alpha_over_rank,
                             prefer=prof.weights_entry)
    check_model_fits(prof, model.config)
    logger.info("stream profile %s (%s)", prof.name, why)
    return model, prof, why


__all__ = [
    "AUTO", "LONGLIVE_MERGED_FORMAT", "PROFILES", "PROFILE_METADATA_KEY", "PROFILE_NAMES", "PublicFile",
    "StreamProfile", "check_model_fits", "detect_profile", "load_student", "profile", "profile_from_metadata", "resolve_profile",
]
