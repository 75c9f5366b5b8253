"""Per-chunk progress with a latent preview image (ComfyUI's progress bar and its Latent2RGB convention)."""

from __future__ import annotations

import comfy.model_management as mm
import comfy.utils
import torch
from comfy.cli_args import LatentPreviewMethod, args
from PIL import Image

from ..chameleon_core import latents as core_latents

MAX_PREVIEW = 512


def preview_image(raw: torch.Tensor) -> tuple[str, Image.Image, int] | None:
    """Last frame of raw latents ``[B, C, T, h, w]`` as a preview tuple, or None when previews are off."""
    if args.preview_method == LatentPreviewMethod.NoPreviews:
        return None
    family = core_latents.latent_family(raw.shape[1])
    rgb = family.preview_rgb(raw[:1, :, -1:].float())[0, -1]  # [h, w, 3] in 0..1
    img = Image.fromarray((rgb.cpu().numpy() * 255).round().astype("uint8"))
    return ("JPEG", img, getattr(args, "preview_size", MAX_PREVIEW) or MAX_PREVIEW)


class ChunkProgress:
    """Moves ComfyUI's progress bar once per finished chunk (or step), with a preview of its latents."""

    def __init__(self, total: int) -> None:
        self.bar = comfy.utils.ProgressBar(total)
        self.done = 0

    def __call__(self, index: int, total: int, model_space: torch.Tensor) -> None:
        """Progress callback of the core loops, which hand over model-space latents."""
        self.raw(index, total, core_latents.to_raw(model_space.detach()))

    def raw(self, index: int, total: int, raw: torch.Tensor) -> None:
        """Progress with raw (VAE-space) latents for the preview."""
        self.done = index + 1
        self.bar.update_absolute(self.done, total, preview_image(raw))


def interrupted() -> bool:
    """Polled between chunks: has the user pressed Cancel?"""
    return mm.processing_interrupted()


def raise_if_interrupted() -> None:
    """After a loop that stopped early on an interrupt, tell ComfyUI (the input state stays valid)."""
    mm.throw_exception_if_processing_interrupted()
