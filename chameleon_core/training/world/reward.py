"""The world's stand-in for GR-DMD's aesthetic reward: how cleanly a frame is drawn in the world's own palette.

FashionChameleon weights each chunk's DMD gradient by ``softmax(r / -tau)`` of an aesthetic score of its decoded
frames (low-quality chunks get more gradient). The aesthetic predictor (CLIP ViT-L/14 + the LAION MLP) means nothing
on 64x64 cartoons, so the miniature pipeline scores what "a good-looking frame" is in this world: every pixel the
renderer draws is exactly one palette colour (a wall, a pole, skin, hair, trousers, a garment colour, a pattern
mark, or the try-off image's white), so a frame's reward is minus the mean distance of its pixels to the nearest palette colour (RGB in
0..1, Euclidean). Blur, colour bleeding and the codec's or the student's artefacts lower it; a clean frame scores 0.

Like the aesthetic score it needs no target (no mask, no garment label): it judges quality, not faithfulness to
the conditions. It has the reward interface of :mod:`chameleon_core.training.reward` (``reward(frames [N, 3, H, W]
in [-1, 1]) -> [N]``, higher is better), so the GR-DMD stage uses it unchanged.
"""

from __future__ import annotations

import torch

from chameleon_core.world.catalog import palette


def world_palette() -> torch.Tensor:
    """Every colour the renderer draws, ``[K, 3]`` in 0..1 (:func:`chameleon_core.world.catalog.palette`: walls and
    their poles, skin, hair, trousers, garment colours, the pattern mark), plus the try-off image's white."""
    colours = {e.rgb for e in palette()} | {(255, 255, 255)}
    return torch.tensor(sorted(colours), dtype=torch.float32) / 255.0


class PaletteReward:
    """``reward(frames [N, 3, H, W] in [-1, 1]) -> [N]``: minus the mean distance of each pixel to the nearest
    palette colour (0 for a frame drawn exactly in the world's colours)."""

    def __init__(self, palette: torch.Tensor | None = None) -> None:
        self.palette = world_palette() if palette is None else palette.float()

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"the palette reward takes frames [N, 3, H, W] in [-1, 1], got shape {tuple(frames.shape)}")
        rgb = ((frames.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)  # [N, H, W, 3]
        palette = self.palette.to(rgb.device)
        dist = torch.cdist(rgb.reshape(rgb.shape[0], -1, 3), palette[None].expand(rgb.shape[0], -1, -1))  # [N, HW, K]
        return -dist.min(dim=-1).values.mean(dim=-1)
