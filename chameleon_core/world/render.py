"""Rendering the world: a sample -> frames and exact per-pixel labels (API stub; body follows)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .catalog import FRAMES, SIZE, Garment, WorldSample

#: Label values of :attr:`Rendered.labels`; the three masks are unions of these.
BACKGROUND, SKIN, HAIR, TROUSERS, GARMENT = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class Rendered:
    """A rendered clip. ``frames`` uint8 ``[T, H, W, 3]``; ``labels`` uint8 ``[T, H, W]`` (values above)."""

    frames: torch.Tensor
    labels: torch.Tensor

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """``garment``, ``body`` (skin, hair, trousers) and ``background``: bool ``[T, H, W]``, a partition."""
        raise NotImplementedError

    def float_frames(self) -> torch.Tensor:
        """``[T, H, W, 3]`` float in 0..1."""
        return self.frames.float() / 255.0


def render(sample: WorldSample, *, size: int = SIZE, frames: int = FRAMES, garment: Garment | None = None,
           switch_to: Garment | None = None, switch_frame: int | None = None) -> Rendered:
    """Render ``sample`` (wearing ``garment`` if given, else ``sample.garment``).

    With ``switch_to`` and ``switch_frame``: frames ``< switch_frame`` wear the first garment, frames
    ``>= switch_frame`` wear ``switch_to`` (identity, motion and camera are unchanged: the ground truth of a
    garment switch)."""
    raise NotImplementedError


def render_reference(sample: WorldSample, *, size: int = SIZE) -> Rendered:
    """The reference image: frame 0 of the clip, re-dressed in ``sample.reference_garment`` (T = 1)."""
    raise NotImplementedError


def render_garment_on_white(garment: Garment, *, size: int = SIZE) -> torch.Tensor:
    """The try-off image: the garment alone, flat and centred, RGBA uint8 ``[H, W, 4]`` (alpha 0 outside)."""
    raise NotImplementedError
