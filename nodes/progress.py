"""Per-chunk progress with a preview image: ComfyUI's progress bar with its Latent2RGB convention, or, when a node is
given the tiny decoder, that decoder's last decoded frame of the chunk."""

from __future__ import annotations

from collections.abc import Callable

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
    return frame_preview(family.preview_rgb(raw[:1, :, -1:].float())[0, -1])  # [h, w, 3] in 0..1


def frame_preview(rgb: torch.Tensor) -> tuple[str, Image.Image, int]:
    """A decoded frame ``[H, W, 3]`` in 0..1 as a preview tuple."""
    img = Image.fromarray((rgb.cpu().numpy() * 255).round().astype("uint8"))
    return ("JPEG", img, getattr(args, "preview_size", MAX_PREVIEW) or MAX_PREVIEW)


class ChunkProgress:
    """Moves ComfyUI's progress bar once per finished chunk (or step), with a preview of its latents.

    ``frames``: model-space latents of a chunk -> its last frame ``[H, W, 3]`` in 0..1 (the tiny decoder's
    ``adapters.tiny_decoder.TinyPreview``); shown instead of the Latent2RGB preview. Not called when previews are off.
    """

    def __init__(self, total: int, frames: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.bar = comfy.utils.ProgressBar(total)
        self.frames = frames
        self.done = 0

    def __call__(self, index: int, total: int, model_space: torch.Tensor) -> None:
        """Progress callback of the core loops, which hand over model-space latents."""
        if self.frames is not None:
            self.done = index + 1
            off = args.preview_method == LatentPreviewMethod.NoPreviews
            self.bar.update_absolute(self.done, total, None if off else frame_preview(self.frames(model_space)))
            return
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


def consume_interrupt() -> None:
    """Clear a Cancel that a node has honoured by ending early and returning what it made (the live node)."""
    mm.interrupt_current_processing(False)


def executing_ids() -> tuple[str | None, str | None]:
    """(prompt id, node id) of the node running on this thread, or (None, None) outside ComfyUI's executor."""
    from comfy_execution.utils import get_executing_context

    context = get_executing_context()
    return (context.prompt_id, context.node_id) if context is not None else (None, None)


class LiveProgress:
    """The live node's progress bar, moved as its frames are shown (``nodes/live_frames.py`` calls it; no preview
    image: the frames have their own channel). ComfyUI's progress hook raises when the user pressed Cancel (and
    clears the flag): that is recorded in :attr:`cancelled`, which the live node's ``should_stop`` reads."""

    def __init__(self, node_id: str | None, total_chunks: int | None) -> None:
        self.bar = comfy.utils.ProgressBar(total_chunks or 1, node_id=node_id)
        self.total = total_chunks
        self.cancelled = False

    def __call__(self, chunk: int) -> None:
        try:
            self.bar.update_absolute(chunk, self.total or chunk + 1, None)
        except mm.InterruptProcessingException:
            self.cancelled = True
