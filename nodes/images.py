"""Conversions between ComfyUI's IMAGE layout and the core's pixel tensors; fitting comes from the core.

Plain torch, no ComfyUI import (tests import this module on its own). ComfyUI's IMAGE is ``[B, H, W, C]`` float in
0..1, where a video is a batch of frames; the core's VAE takes ``[B, 3, T, H, W]`` (video) or ``[B, 3, H, W]``
(image) in [-1, 1].

The reference/garment fitting (FashionChameleon's data format) lives in ``chameleon_core.images`` and is re-exported
here for the nodes.
"""

from __future__ import annotations

import torch

from ._core import images as _images

to_rgb = _images.to_rgb
fit_reference = _images.fit_reference
fit_garment = _images.fit_garment
image_to_pixels = _images.to_pixels


def image_to_video(image: torch.Tensor) -> torch.Tensor:
    """IMAGE frames ``[T, H, W, C]`` in 0..1 -> one video ``[1, 3, T, H, W]`` in [-1, 1]."""
    return image_to_pixels(image).transpose(0, 1).unsqueeze(0)


def video_to_image(video: torch.Tensor) -> torch.Tensor:
    """Video ``[B, 3, T, H, W]`` in [-1, 1] -> IMAGE ``[B * T, H, W, 3]`` float32 in 0..1 (frames of all videos)."""
    if not isinstance(video, torch.Tensor) or video.ndim != 5 or video.shape[1] != 3:
        got = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise ValueError(f"expected a video [B, 3, T, H, W] in [-1, 1], got {got}; decode latents with the VAE first")
    b, _, t, h, w = video.shape
    frames = video.permute(0, 2, 3, 4, 1).reshape(b * t, h, w, 3)
    return ((frames.float() + 1.0) / 2.0).clamp(0.0, 1.0)
