"""The typed objects that travel through the pack's sockets (declared in :mod:`.sockets`), never dicts; plain
Python, so the adapters and the tests use them without ComfyUI.

CHAMELEON_MODEL carries a :class:`ChameleonModel`, CHAMELEON_CONDITIONS a :class:`ChameleonConditions`,
CHAMELEON_STREAM a :class:`ChameleonStream` (an immutable core stream state: ComfyUI caches node outputs by reference,
so every node returns a new one and never changes its input), CHAMELEON_PREVIEW_DECODER a
:class:`ChameleonPreviewDecoder` (the tiny TAEHV decoder, for previews and the live path).
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field

import torch
from torch import nn

from ..chameleon_core.decoding import VideoSegment
from ..chameleon_core.latents import LatentFamily
from ..chameleon_core.stream_options import ConditionWeighting
from ..chameleon_core.streaming import StreamState
from ..chameleon_core.taehv import TinyVideoDecoder


class ModelHolder(nn.Module):
    """What ComfyUI's ModelPatcher manages: it sets bookkeeping attributes (``device``, ...) on this module."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.diffusion_model = model


@dataclass(frozen=True)
class ChameleonModel:
    """A loaded transformer under ComfyUI's model management."""

    patcher: object
    """comfy.model_patcher.ModelPatcher over a :class:`ModelHolder`."""
    kind: str
    """``teacher`` (bidirectional) or ``student`` (causal, few-step)."""
    name: str
    """Checkpoint file name, for messages."""
    condition_weighting: ConditionWeighting | None = None
    """Condition weighting set by ChameleonConditionWeighting (the samplers and streams of this handle use it)."""
    view: nn.Module | None = None
    """For a native ComfyUI MODEL (``patcher`` is that MODEL's own ModelPatcher): the core's
    ``chameleon_core.module_view.ModuleView`` over its diffusion model's modules; None for the pack's loaders."""
    shift: float | None = None
    """The flow shift a native MODEL was patched with (``ModelSamplingSD3``); None: the stream's default."""
    profile: str = "fashionchameleon"
    """The student's stream profile (``chameleon_core.profiles``): its own loop, chosen on the loader."""

    @property
    def config(self):
        """The transformer's ``WanConfig``."""
        return (self.view if self.view is not None else self.patcher.model.diffusion_model).config

    def load(self):
        """Bring the weights to the compute device through ComfyUI's model management (fully, or partially where
        VRAM is short and the model's ops can stream the rest) and return the model the core runs."""
        import comfy.model_management as mm

        mm.load_models_gpu([self.patcher])
        return self.view if self.view is not None else self.patcher.model.diffusion_model


@dataclass(frozen=True)
class ChameleonConditions:
    """What a stream starts from, at the video resolution: reference and garment as model-space one-frame latents
    ``[1, C, 1, h, w]`` (FashionChameleon), or none of them (a public student's text-to-video, optionally from a
    ``first_frame`` latent: image-to-video; ChameleonVideoSize)."""

    reference: torch.Tensor | None
    garment: torch.Tensor | None
    width: int
    height: int
    family: str | None
    """Latent family of the VAE that encoded them (``wan2.1`` / ``wan2.2``); None when nothing was encoded."""
    first_frame: torch.Tensor | None = None
    """Image-to-video: the first frame's model-space latent ``[1, C, 1, h, w]``."""

    @property
    def has_person(self) -> bool:
        """Reference and garment are given (FashionChameleon's in-context conditions)."""
        return self.reference is not None and self.garment is not None


@dataclass(frozen=True)
class ChameleonStream:
    """What CHAMELEON_STREAM carries: an immutable core stream state plus the model handle that made it."""

    state: StreamState
    model: ChameleonModel
    origin: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Which stream this is (set at Stream Start, kept by Generate and the switches): the segments a Generate
    returns carry it, so Stream Decode can refuse segments of different streams."""
    video: VideoSegment | None = None
    """The segment of the stream's video its last Generate made (it knows the ones before it): a garment switch's
    disentangle and Stream Decode decode through it, each chunk once per VAE. None before the first Generate."""

    def with_state(self, state: StreamState, **changes) -> ChameleonStream:
        """The same stream (model, origin, video) at a new state."""
        return dataclasses.replace(self, state=state, **changes)


@dataclass(frozen=True)
class ChameleonPreviewDecoder:
    """A loaded tiny streaming decoder (TAEHV ``taew2_1`` / ``taew2_2``): cheap frames for previews and the live path,
    not for final renders. Its weights are read-only after loading; every decode keeps its own carried state."""

    decoder: TinyVideoDecoder
    name: str
    """File name in ``vae_approx``, for messages."""

    @property
    def family(self) -> LatentFamily:
        """The latent family it decodes (``wan2.1`` / ``wan2.2``)."""
        return self.decoder.family
