"""Fitting person and garment images to the video size, as FashionChameleon's data pipeline does.

Images are channels-last batches ``[B, H, W, C]``, float in 0..1 (PIL's and ComfyUI's layout), with C = 1 (grey),
2 (grey + alpha), 3 (RGB) or 4 (RGBA). Follows the authors' ``datasets/fashion_dataset.py`` (QuanjianSong/
FashionChameleon, summarised in ``shared/reference/FASHIONCHAMELEON.md``): the reference is scaled by the *max*
ratio and centre-cropped; the garment is scaled by the *min* ratio and padded with white, left/top getting
``floor(diff / 2)``. Resizing is antialiased bilinear; the authors' benchmark uses LANCZOS, which differs by a small
amount of sharpness only.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

WHITE = 1.0


def to_rgb(image: torch.Tensor) -> torch.Tensor:
    """Any IMAGE ``[B, H, W, C]`` with C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA) -> ``[B, H, W, 3]``.

    Alpha is composited over white (garment photos are cut-outs on transparent backgrounds; white matches the
    padding colour of the training data).
    """
    _check_image(image)
    c = image.shape[-1]
    if c in (2, 4):
        colour, alpha = image[..., : c - 1], image[..., c - 1 :].clamp(0.0, 1.0)
        image = colour * alpha + WHITE * (1.0 - alpha)
    if image.shape[-1] == 1:
        image = image.expand(*image.shape[:-1], 3)
    return image.contiguous()


def fit_reference(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Scale by the max ratio (cover) and centre-crop to ``width x height``. IMAGE in, RGB IMAGE out.

    The crop starts at ``floor((scaled - target) / 2)`` on each axis.
    """
    image = to_rgb(image)
    _check_size(width, height)
    h, w = image.shape[1:3]
    ratio = max(width / w, height / h)
    nw, nh = max(width, round(w * ratio)), max(height, round(h * ratio))
    image = _resize(image, nh, nw)
    top, left = (nh - height) // 2, (nw - width) // 2
    return image[:, top : top + height, left : left + width].contiguous()


def fit_garment(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Scale by the min ratio (contain) and pad with white to ``width x height``. IMAGE in, RGB IMAGE out.

    Left and top padding are ``floor(diff / 2)``, the remainder goes right and bottom (FashionChameleon's format).
    """
    image = to_rgb(image)
    _check_size(width, height)
    h, w = image.shape[1:3]
    ratio = min(width / w, height / h)
    nw, nh = min(width, max(1, round(w * ratio))), min(height, max(1, round(h * ratio)))
    image = _resize(image, nh, nw)
    left, top = (width - nw) // 2, (height - nh) // 2
    # F.pad order for [B, H, W, C] from the last dim: (C), (W left, right), (H top, bottom).
    return F.pad(image, (0, 0, left, width - nw - left, top, height - nh - top), value=WHITE)


def _resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[B, H, W, 3]`` -> ``[B, height, width, 3]``, antialiased bilinear; unchanged when the size already fits."""
    if image.shape[1:3] == (height, width):
        return image
    x = image.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0.0, 1.0).permute(0, 2, 3, 1).to(image.dtype)


def _check_image(image: torch.Tensor) -> None:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"expected a ComfyUI IMAGE tensor [B, H, W, C], got {type(image).__name__}")
    if image.ndim != 4 or image.shape[-1] not in (1, 2, 3, 4) or min(image.shape) < 1:
        raise ValueError(
            f"expected a ComfyUI IMAGE [B, H, W, C] with C in 1..4 (grey, grey+alpha, RGB, RGBA), got shape "
            f"{tuple(image.shape)}; a single image [H, W, C] needs a batch axis (image[None])"
        )
    if not image.is_floating_point():
        raise TypeError(f"IMAGE must be float in 0..1, got dtype {image.dtype}; divide 8-bit images by 255")


def _check_size(width: int, height: int) -> None:
    if not (isinstance(width, int) and isinstance(height, int)) or width < 1 or height < 1:
        raise ValueError(f"target size must be positive integers, got width={width!r}, height={height!r}")


def load_image(path) -> torch.Tensor:
    """An image file -> ``[1, H, W, C]`` float in 0..1 (C as stored: grey, grey+alpha, RGB or RGBA)."""
    from pathlib import Path

    from PIL import Image

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image not found: {p}; check the path")
    with Image.open(p) as im:
        if im.mode not in ("L", "LA", "RGB", "RGBA"):
            im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
        arr = np.asarray(im, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy())[None]


def to_pixels(image: torch.Tensor) -> torch.Tensor:
    """``[B, H, W, C]`` 0..1 -> ``[B, 3, H, W]`` in [-1, 1] (what ``WanVAE.encode_image`` takes)."""
    return to_rgb(image).permute(0, 3, 1, 2) * 2.0 - 1.0
