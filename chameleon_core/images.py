"""Fitting person and garment images (and video frames) to the video size, as FashionChameleon's data pipeline does.

Images are channels-last batches ``[B, H, W, C]``, float in 0..1 (PIL's and ComfyUI's layout), with C = 1 (grey),
2 (grey + alpha), 3 (RGB) or 4 (RGBA). Follows the authors' ``datasets/fashion_dataset.py`` (QuanjianSong/
FashionChameleon; ``docs/design.md``, the facts: data): the reference and the
video frames are scaled by the *max* ratio and centre-cropped; the garment is scaled by the *min* ratio and padded
with white, left/top getting ``floor(diff / 2)``.

Internally everything runs channels-first ``[N, 3, H, W]`` (kornia's and ``F.interpolate``'s layout); the public
functions convert once on the way in and once on the way out. Colour handling uses ``kornia.color`` (grey -> RGB,
alpha composited over white).

Resize policy, one for every path (reference, garment, video frames; training and inference): antialiased bilinear,
``F.interpolate(mode="bilinear", antialias=True)``, which equals PIL's ``Image.BILINEAR`` resize and torchvision's
antialiased resize (``tests/test_images.py`` checks it against PIL). Not used, on purpose:

- ``kornia.geometry.transform.resize(antialias=True)``: it approximates antialiasing with a Gaussian blur before a
  plain bilinear resample, which differs from PIL's bilinear by up to ~0.1 (mean ~0.01) per pixel on photos;
- LANCZOS, which the authors' benchmark script uses for the reference: it differs from the policy above by a small
  amount of sharpness only, and a second policy would let training and inference inputs drift apart.
"""

from __future__ import annotations

import math
import os
import stat
import warnings
from pathlib import Path

import kornia
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

WHITE = 1.0


class ImageFileError(ValueError):
    """An image file cannot be read (missing, not a regular file, not an image, damaged, or too large): the one
    error type of :func:`load_image`; the message names the file, what is wrong and the fix."""


MAX_IMAGE_PIXELS = 89_478_485
"""Largest image :func:`load_image` decodes (PIL's own decompression-bomb limit, about 9459 x 9459): a bigger file
would take gigabytes as a float image, and the video is at most a few megapixels anyway."""

OUT_OF_RANGE = 2.0
"""A float IMAGE whose maximum exceeds this is taken to be in 0..255 (not 0..1) and refused rather than clamped;
small overshoots (resampling ringing) are clamped as before."""


def to_rgb(image: torch.Tensor, *, name: str = "IMAGE") -> torch.Tensor:
    """Any IMAGE ``[B, H, W, C]`` with C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA) -> ``[B, H, W, 3]``.

    Alpha is composited over white (garment photos are cut-outs on transparent backgrounds; white matches the
    padding colour of the training data).
    """
    return _channels_last(_rgb_channels_first(image, name))


def fit_reference(image: torch.Tensor, width: int, height: int, *, name: str = "reference image") -> torch.Tensor:
    """Scale by the max ratio (cover) and centre-crop to ``width x height``. IMAGE in, RGB IMAGE out.

    The crop starts at ``floor((scaled - target) / 2)`` on each axis. ``name`` is the input named in errors.
    """
    x = _rgb_channels_first(image, name)
    _check_size(width, height)
    return _channels_last(_cover(x, width, height))


def fit_video(frames: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Fit video frames the reference way (:func:`fit_reference`): cover, then centre-crop, every frame alike.

    frames: ``[T, H, W, C]`` (one clip; a ComfyUI IMAGE batch of frames) or ``[B, T, H, W, C]`` (a batch of clips),
    0..1, C as in :func:`to_rgb`. Returns ``[T, height, width, 3]`` or ``[B, T, height, width, 3]``. All frames go
    through one resize call, so a long clip at full resolution needs memory for the input and the output together.
    """
    if not isinstance(frames, torch.Tensor) or frames.ndim not in (4, 5):
        got = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"expected video frames [T, H, W, C] or [B, T, H, W, C], got {got}")
    if frames.ndim == 4:
        return fit_reference(frames, width, height, name="video frames")
    clips = frames.shape[0]
    fitted = fit_reference(rearrange(frames, "b t h w c -> (b t) h w c"), width, height, name="video frames")
    return rearrange(fitted, "(b t) h w c -> b t h w c", b=clips)


def fit_garment(image: torch.Tensor, width: int, height: int, *, name: str = "garment image") -> torch.Tensor:
    """Scale by the min ratio (contain) and pad with white to ``width x height``. IMAGE in, RGB IMAGE out.

    Left and top padding are ``floor(diff / 2)``, the remainder goes right and bottom (FashionChameleon's format).
    """
    x = _rgb_channels_first(image, name)
    _check_size(width, height)
    h, w = x.shape[-2:]
    ratio = min(width / w, height / h)
    nw, nh = min(width, max(1, round(w * ratio))), min(height, max(1, round(h * ratio)))
    x = _resize(x, nh, nw)
    left, top = (width - nw) // 2, (height - nh) // 2
    return _channels_last(F.pad(x, (left, width - nw - left, top, height - nh - top), value=WHITE))


def to_pixels(image: torch.Tensor, *, name: str = "IMAGE") -> torch.Tensor:
    """``[B, H, W, C]`` 0..1 -> ``[B, 3, H, W]`` in [-1, 1] (what ``WanVAE.encode_image`` takes)."""
    return _rgb_channels_first(image, name) * 2.0 - 1.0


# --- channels-first internals: [N, 3, H, W] -----------------------------------------------------------------------


def _rgb_channels_first(image: torch.Tensor, name: str = "IMAGE") -> torch.Tensor:
    """Checked IMAGE ``[B, H, W, C]`` (C = 1..4) -> RGB ``[B, 3, H, W]``, alpha composited over white."""
    _check_image(image, name)
    x = rearrange(image, "b h w c -> b c h w")
    if x.shape[1] in (1, 2):  # grey (+ alpha) -> RGB (+ alpha)
        x = torch.cat([kornia.color.grayscale_to_rgb(x[:, :1]), x[:, 1:]], dim=1)
    if x.shape[1] == 4:
        # Clamp alpha so out-of-range values cannot push the colour past the garment or the white background.
        x = torch.cat([x[:, :3], x[:, 3:].clamp(0.0, 1.0)], dim=1)
        x = kornia.color.rgba_to_rgb(x)  # default background: white
    return x


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` -> contiguous IMAGE ``[N, H, W, 3]``."""
    return rearrange(x, "n c h w -> n h w c").contiguous()


def _cover(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """``[N, 3, H, W]`` -> ``[N, 3, height, width]``: scale by the max ratio, crop the centre (floor offsets)."""
    h, w = x.shape[-2:]
    ratio = max(width / w, height / h)
    nw, nh = max(width, round(w * ratio)), max(height, round(h * ratio))
    x = _resize(x, nh, nw)
    top, left = (nh - height) // 2, (nw - width) // 2
    return x[:, :, top : top + height, left : left + width]


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[N, 3, H, W]`` -> ``[N, 3, height, width]`` by the module's resize policy; unchanged when it already fits.

    Computed in fp32 whatever the image dtype, then clamped to 0..1 (rounding, or an out-of-range input, must not
    leave an IMAGE outside its range).
    """
    if x.shape[-2:] == (height, width):
        return x
    y = F.interpolate(x.float(), size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return y.clamp(0.0, 1.0).to(x.dtype)


def _check_image(image: torch.Tensor, name: str = "IMAGE") -> None:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"expected a ComfyUI IMAGE tensor [B, H, W, C], got {type(image).__name__}")
    if image.ndim != 4 or image.shape[-1] not in (1, 2, 3, 4) or min(image.shape) < 1:
        raise ValueError(
            f"expected a ComfyUI IMAGE [B, H, W, C] with C in 1..4 (grey, grey+alpha, RGB, RGBA), got shape "
            f"{tuple(image.shape)}; a single image [H, W, C] needs a batch axis (image[None])"
        )
    if not image.is_floating_point():
        raise TypeError(f"IMAGE must be float in 0..1, got dtype {image.dtype}; divide 8-bit images by 255")
    # One host sync for the three checks: NaN/inf and a 0..255 float image would otherwise turn into black or
    # white pixels without a word.
    lo, hi = torch.stack([image.amin(), image.amax()]).float().tolist()
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(
            f"{name} holds NaN or inf values (min {lo}, max {hi}); an image is float in 0..1: check the node or "
            "file that made it"
        )
    if hi > OUT_OF_RANGE:
        raise ValueError(
            f"{name} has values up to {hi:g}, but an IMAGE is float in 0..1; it looks like 0..255 pixel values: "
            "divide it by 255 (it is not clamped, which would make it almost all white)"
        )


def _check_size(width: int, height: int) -> None:
    if not (isinstance(width, int) and isinstance(height, int)) or width < 1 or height < 1:
        raise ValueError(f"target size must be positive integers, got width={width!r}, height={height!r}")


def load_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """An image file -> ``[1, H, W, C]`` float in 0..1 (C as stored: grey, grey+alpha, RGB or RGBA).

    As ComfyUI's ``LoadImage``: the EXIF orientation is applied (a phone photo comes out upright), and 16-bit
    greyscale (``I;16``) is scaled by 65535 (16-bit RGB PNGs are reduced to 8 bits by PIL, correctly scaled). Every
    failure raises :class:`ImageFileError` naming the file.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path).expanduser()
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise ImageFileError(f"image not found: {p} (absolute: {p.resolve()}); check the path") from None
    except OSError as e:
        raise ImageFileError(f"cannot access the image {p} ({e.strerror}); check its permissions") from None
    if not stat.S_ISREG(mode):
        raise ImageFileError(
            f"image {p} is {'a folder' if stat.S_ISDIR(mode) else 'not a regular file (a pipe or device)'}; pass "
            "a PNG, JPEG or WebP file"
        )
    limit = Image.MAX_IMAGE_PIXELS or MAX_IMAGE_PIXELS
    too_big = (
        f"image {p} is too large to load safely (more than {limit} pixels, PIL's decompression-bomb limit: it "
        "would take gigabytes of memory, or the file is crafted to); scale it down to at most a few thousand pixels "
        "a side before using it"
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                w, h = im.size
                if w * h > limit:
                    raise ImageFileError(f"{too_big}; it is {w}x{h}")
                im = ImageOps.exif_transpose(im)
                arr = _pixels(im)
    except ImageFileError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageFileError(f"{too_big} ({e})") from None
    except UnidentifiedImageError:
        raise ImageFileError(f"{p} is not an image PIL can read (or it is damaged); pass a PNG, JPEG or WebP file") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # PIL raises these for truncated / damaged files
        raise ImageFileError(
            f"cannot read the image {p} ({type(e).__name__}: {e}); the file is damaged or cut short: re-save or "
            "re-copy it as PNG or JPEG"
        ) from None
    if not np.isfinite(arr).all():  # float TIFFs can carry NaN/inf
        raise ImageFileError(f"image {p} holds NaN or inf pixel values; re-save it as an 8- or 16-bit PNG or JPEG")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy())[None]


def _pixels(im) -> np.ndarray:
    """A PIL image -> float32 ``[H, W]`` or ``[H, W, C]`` in 0..1, from its own bit depth."""
    if im.mode.startswith("I;16") or im.mode == "I":
        # 16-bit greyscale (PNG loads as I;16, or as I on older PIL): convert("RGB") would clip it to white.
        return np.clip(np.asarray(im, dtype=np.float32) / 65535.0, 0.0, 1.0)
    if im.mode == "F":  # float TIFF: 0..1 kept, larger ranges taken as 16-bit; NaN is checked by the caller
        arr = np.asarray(im, dtype=np.float32)
        return arr / 65535.0 if arr.size and float(np.nanmax(arr)) > 1.0 else arr
    if im.mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
    return np.asarray(im, dtype=np.float32) / 255.0
