"""Latent spaces of the Wan VAEs, and the one place where raw and model-space latents are converted.

ComfyUI's ``VAEEncode`` returns *raw* latents (what the VAE's encoder produces); the DiT was trained on latents
normalised per channel, ``(raw - mean) / std``. ComfyUI applies this in ``comfy/latent_formats.py`` (``Wan21``,
``Wan22``); the statistics below are the same published values. Every caller (transformer entry points, samplers,
streaming, nodes) converts through :func:`to_model_space` / :func:`to_raw` so the two spaces cannot be mixed up.

Also holds the latent-to-RGB preview factors; each family counts frames with its own stride through
:mod:`chameleon_core.frames`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import frames

_WAN21_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
_WAN21_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip
_WAN21_RGB = (
    (-0.1299, -0.1692, 0.2932), (0.0671, 0.0406, 0.0442), (0.3568, 0.2548, 0.1747), (0.0372, 0.2344, 0.1420),
    (0.0313, 0.0189, -0.0328), (0.0296, -0.0956, -0.0665), (-0.3477, -0.4059, -0.2925), (0.0166, 0.1902, 0.1975),
    (-0.0412, 0.0267, -0.1364), (-0.1293, 0.0740, 0.1636), (0.0680, 0.3019, 0.1128), (0.0032, 0.0581, 0.0639),
    (-0.1251, 0.0927, 0.1699), (0.0060, -0.0633, 0.0005), (0.3477, 0.2275, 0.2950), (0.1984, 0.0913, 0.1861),
)  # fmt: skip
_WAN21_RGB_BIAS = (-0.1835, -0.0868, -0.3360)

_WAN22_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)  # fmt: skip
_WAN22_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)  # fmt: skip
_WAN22_RGB = (
    (0.0119, 0.0103, 0.0046), (-0.1062, -0.0504, 0.0165), (0.0140, 0.0409, 0.0491), (-0.0813, -0.0677, 0.0607),
    (0.0656, 0.0851, 0.0808), (0.0264, 0.0463, 0.0912), (0.0295, 0.0326, 0.0590), (-0.0244, -0.0270, 0.0025),
    (0.0443, -0.0102, 0.0288), (-0.0465, -0.0090, -0.0205), (0.0359, 0.0236, 0.0082), (-0.0776, 0.0854, 0.1048),
    (0.0564, 0.0264, 0.0561), (0.0006, 0.0594, 0.0418), (-0.0319, -0.0542, -0.0637), (-0.0268, 0.0024, 0.0260),
    (0.0539, 0.0265, 0.0358), (-0.0359, -0.0312, -0.0287), (-0.0285, -0.1032, -0.1237), (0.1041, 0.0537, 0.0622),
    (-0.0086, -0.0374, -0.0051), (0.0390, 0.0670, 0.2863), (0.0069, 0.0144, 0.0082), (0.0006, -0.0167, 0.0079),
    (0.0313, -0.0574, -0.0232), (-0.1454, -0.0902, -0.0481), (0.0714, 0.0827, 0.0447), (-0.0304, -0.0574, -0.0196),
    (0.0401, 0.0384, 0.0204), (-0.0758, -0.0297, -0.0014), (0.0568, 0.1307, 0.1372), (-0.0055, -0.0310, -0.0380),
    (0.0239, -0.0305, 0.0325), (-0.0663, -0.0673, -0.0140), (-0.0416, -0.0047, -0.0023), (0.0166, 0.0112, -0.0093),
    (-0.0211, 0.0011, 0.0331), (0.1833, 0.1466, 0.2250), (-0.0368, 0.0370, 0.0295), (-0.3441, -0.3543, -0.2008),
    (-0.0479, -0.0489, -0.0420), (-0.0660, -0.0153, 0.0800), (-0.0101, 0.0068, 0.0156), (-0.0690, -0.0452, -0.0927),
    (-0.0145, 0.0041, 0.0015), (0.0421, 0.0451, 0.0373), (0.0504, -0.0483, -0.0356), (-0.0837, 0.0168, 0.0055),
)  # fmt: skip
_WAN22_RGB_BIAS = (0.0317, -0.0878, -0.1388)


@dataclass(frozen=True)
class LatentFamily:
    """One VAE's latent space: channel count, compression and per-channel statistics."""

    name: str
    """``wan2.1`` or ``wan2.2``."""
    channels: int
    """Latent channels (16 or 48)."""
    spatial_stride: int
    """Pixels per latent cell along height and width (8 or 16)."""
    temporal_stride: int
    """Pixel frames per latent frame after the first (4 for both)."""
    mean: tuple[float, ...]
    std: tuple[float, ...]
    rgb_factors: tuple[tuple[float, float, float], ...]
    """Linear latent->RGB map for cheap previews (ComfyUI's factors)."""
    rgb_bias: tuple[float, float, float]

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if like.ndim < 2 or like.shape[1] != self.channels:
            raise ValueError(
                f"expected {self.name} latents with {self.channels} channels in dim 1, got shape "
                f"{tuple(like.shape)}; use the VAE that matches the model ({self.name})"
            )
        view = (1, self.channels) + (1,) * (like.ndim - 2)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=like.device).view(view)
        std = torch.tensor(self.std, dtype=torch.float32, device=like.device).view(view)
        return mean, std

    def to_model_space(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents ``[B, C, T, H, W]`` -> the normalised space the DiT works in."""
        mean, std = self._stats(raw)
        return ((raw.float() - mean) / std).to(raw.dtype)

    def to_raw(self, latents: torch.Tensor) -> torch.Tensor:
        """Model-space latents -> raw VAE latents (what ComfyUI's ``VAEDecode`` expects)."""
        mean, std = self._stats(latents)
        return (latents.float() * std + mean).to(latents.dtype)

    def preview_rgb(self, latents: torch.Tensor) -> torch.Tensor:
        """Cheap RGB preview of raw latents ``[B, C, T, H, W]`` -> ``[B, T, H, W, 3]`` in 0..1."""
        self._stats(latents)
        factors = torch.tensor(self.rgb_factors, dtype=torch.float32, device=latents.device)  # [C, 3]
        bias = torch.tensor(self.rgb_bias, dtype=torch.float32, device=latents.device)
        rgb = torch.einsum("bcthw,cr->bthwr", latents.float(), factors) + bias
        return ((rgb + 1.0) / 2.0).clamp(0.0, 1.0)

    def latent_size(self, height: int, width: int, patch: tuple[int, int] = (1, 1)) -> tuple[int, int]:
        """Latent (h, w) for a pixel size. Both must be a multiple of ``spatial_stride * patch``."""
        mh, mw = self.spatial_stride * patch[0], self.spatial_stride * patch[1]
        if height <= 0 or width <= 0 or height % mh or width % mw:
            raise ValueError(
                f"resolution {width}x{height} (WxH) does not fit the {self.name} VAE with patch {patch}: width must "
                f"be a multiple of {mw} and height a multiple of {mh}; e.g. use "
                f"{max(mw, round(width / mw) * mw)}x{max(mh, round(height / mh) * mh)}"
            )
        return height // self.spatial_stride, width // self.spatial_stride

    def latent_frames(self, video_frames: int) -> int:
        """Latent frames of a whole video of ``video_frames`` frames: ``(v - 1) // 4 + 1``
        (:func:`chameleon_core.frames.latent_frames`)."""
        return frames.latent_frames(video_frames, stride=self.temporal_stride)

    def video_frames(self, latent_frames: int, *, from_start: bool = True, opens_clip: bool = False) -> int:
        """Video frames ``latent_frames`` latent frames show: ``4 (n - 1) + 1`` from the video's start, ``4 (n - 1)``
        opening a later clip, ``4 n`` continuing it (:func:`chameleon_core.frames.video_frames`)."""
        if latent_frames < 1:
            raise ValueError(f"latent frame count must be >= 1, got {latent_frames}")
        return frames.video_frames(latent_frames, from_start=from_start, opens_clip=opens_clip,
                                   stride=self.temporal_stride)


WAN21 = LatentFamily("wan2.1", 16, 8, 4, _WAN21_MEAN, _WAN21_STD, _WAN21_RGB, _WAN21_RGB_BIAS)
WAN22 = LatentFamily("wan2.2", 48, 16, 4, _WAN22_MEAN, _WAN22_STD, _WAN22_RGB, _WAN22_RGB_BIAS)
FAMILIES: dict[str, LatentFamily] = {WAN21.name: WAN21, WAN22.name: WAN22}


def latent_family(channels: int) -> LatentFamily:
    """The latent family with ``channels`` latent channels (16 -> Wan2.1, 48 -> Wan2.2)."""
    for family in FAMILIES.values():
        if family.channels == channels:
            return family
    raise ValueError(
        f"no Wan VAE has {channels} latent channels; expected 16 (Wan2.1 VAE) or 48 (Wan2.2 VAE)"
    )


def to_model_space(raw: torch.Tensor) -> torch.Tensor:
    """Raw VAE latents ``[B, C, T, H, W]`` -> model space; the family is chosen by ``C``."""
    return latent_family(raw.shape[1]).to_model_space(raw)


def to_raw(latents: torch.Tensor) -> torch.Tensor:
    """Model-space latents ``[B, C, T, H, W]`` -> raw VAE latents; the family is chosen by ``C``."""
    return latent_family(latents.shape[1]).to_raw(latents)
