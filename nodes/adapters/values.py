"""ComfyUI's values <-> the core's tensors: CONDITIONING -> prompt features, IMAGE ``[B, H, W, C]`` in 0..1 <-> video
``[B, 3, T, H, W]`` in [-1, 1], an input-folder image name -> IMAGE, text -> prompt features with a ComfyUI CLIP."""

from __future__ import annotations

import logging

import torch

from ...chameleon_core.images import to_pixels
from ..errors import node_error

logger = logging.getLogger(__name__)


def conditioning_tensor(node: str, name: str, conditioning) -> torch.Tensor:
    """The prompt features ``[1, L, D]`` inside a ComfyUI CONDITIONING."""
    try:
        tensor = conditioning[0][0]
    except (TypeError, IndexError, KeyError):
        tensor = None
    if not isinstance(tensor, torch.Tensor):
        raise node_error(node, name, conditioning, "not a CONDITIONING",
                         "connect CLIPTextEncode fed by a CLIPLoader of type wan")
    if len(conditioning) > 1:
        logger.warning("%s: %s holds %d conditionings; using the first", node, name, len(conditioning))
    return tensor


def encode_text(clip, text: str) -> torch.Tensor:
    """Prompt text -> prompt features ``[1, L, D]`` with a ComfyUI CLIP (as CLIPTextEncode does)."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))[0][0]


def load_input_image(name: str) -> torch.Tensor:
    """An image in ComfyUI's input folder (an upload name, ``[subfolder/]name [type]``) -> IMAGE ``[1, H, W, 3]``
    in 0..1, as LoadImage reads it (EXIF rotation, RGB). Raises ValueError naming the file when it is missing,
    outside the input folders or unreadable."""
    import os

    import folder_paths
    import numpy as np
    from PIL import Image, ImageOps

    path = folder_paths.get_annotated_filepath(name)
    roots = [os.path.abspath(folder_paths.get_directory_by_type(t)) for t in ("input", "temp", "output")]
    real = os.path.abspath(path)
    if not any(os.path.commonpath([real, root]) == root for root in roots if root):
        raise ValueError(f"{name!r} is outside ComfyUI's input folder")
    if not os.path.isfile(real):
        raise ValueError(f"no image {name!r} in ComfyUI's input folder; upload it first (POST /upload/image)")
    try:
        with Image.open(real) as img:
            rgb = ImageOps.exif_transpose(img).convert("RGB")
    except Exception as e:  # noqa: BLE001 (PIL's many decoder errors)
        raise ValueError(f"{name!r} is not a readable image: {e}") from None
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0)[None]


def first_image(node: str, name: str, image: torch.Tensor) -> torch.Tensor:
    """The first image of an IMAGE batch ``[B, H, W, C]`` as ``[1, H, W, C]``; a batch of more says so in the log
    (a condition is one image; never a silent choice)."""
    if image.shape[0] > 1:
        logger.warning("%s: input '%s' is a batch of %d images; using the first (a condition is one image: pick one "
                       "with ImageFromBatch to use another)", node, name, image.shape[0])
    return image[:1]


def image_to_video(image: torch.Tensor) -> torch.Tensor:
    """IMAGE frames ``[T, H, W, C]`` in 0..1 -> one video ``[1, 3, T, H, W]`` in [-1, 1]."""
    return to_pixels(image).transpose(0, 1).unsqueeze(0)


def video_to_image(video: torch.Tensor) -> torch.Tensor:
    """Video ``[B, 3, T, H, W]`` in [-1, 1] -> IMAGE ``[B * T, H, W, 3]`` float32 in 0..1 (frames of all videos)."""
    if not isinstance(video, torch.Tensor) or video.ndim != 5 or video.shape[1] != 3:
        got = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise ValueError(f"expected a video [B, 3, T, H, W] in [-1, 1], got {got}; decode latents with the VAE first")
    b, _, t, h, w = video.shape
    frames = video.permute(0, 2, 3, 4, 1).reshape(b * t, h, w, 3)
    return ((frames.float() + 1.0) / 2.0).clamp(0.0, 1.0)
