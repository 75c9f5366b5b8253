"""3-axis rotary position embedding of the Wan DiT (frames, height, width), with cached tables.

Follows the reference ``rope_params`` / ``rope_apply``: the head dim splits into a frame, a height and a width part;
positions are absolute latent-frame indices (keys are cached after RoPE and never re-indexed). Tables are kept per
position range (:data:`_ROPE_CACHE`), so a chunk's denoising passes and clean pass share one.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from .config import WanConfig


def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Rotary pairs given to the (frame, height, width) axes; 22/21/21 for 128-wide heads, as in Wan."""
    pairs = head_dim // 2
    hw = head_dim // 6
    return pairs - 2 * hw, hw, hw


def rope_angles(
    head_dim: int, theta: float, frame_start: int, frames: int, h: int, w: int, device: torch.device
) -> torch.Tensor:
    """Rotation angles ``[frames*h*w, head_dim/2]`` for frames at positions ``frame_start..`` on an ``h x w`` grid.

    Positions are plain ints, so building the table never syncs with the device. Any position works: no table
    length limit (the reference's table has 1024 entries; streaming far past that stays valid here).
    """
    angles = []
    for n_pairs, start, count in zip(rope_axis_dims(head_dim), (frame_start, 0, 0), (frames, h, w)):
        dim = 2 * n_pairs
        inv = 1.0 / torch.pow(theta, torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim)
        pos = torch.arange(start, start + count, dtype=torch.float64, device=device)
        angles.append(pos[:, None] * inv[None, :])
    f_ang, h_ang, w_ang = angles
    grid = torch.cat(
        [
            f_ang[:, None, None, :].expand(frames, h, w, -1),
            h_ang[None, :, None, :].expand(frames, h, w, -1),
            w_ang[None, None, :, :].expand(frames, h, w, -1),
        ],
        dim=-1,
    )
    return grid.reshape(frames * h * w, -1)


@dataclass(frozen=True)
class Rope:
    """cos / sin tables ``[L, 1, D/2]`` in fp32 for one token sequence."""

    cos: torch.Tensor
    sin: torch.Tensor

    @staticmethod
    def for_frames(config: WanConfig, frame_start: int, frames: int, h: int, w: int, device: torch.device) -> Rope:
        """Tables for frames ``frame_start ..``; cached per (head dim, theta, start, frames, h, w, device): a chunk's
        denoising passes and its clean pass share one table, and a stream revisits few positions at a time."""
        key = (config.head_dim, config.rope_theta, frame_start, frames, h, w, torch.device(device),
               torch.is_inference_mode_enabled())  # inference-mode tables may not be saved by autograd later
        hit = _ROPE_CACHE.get(key)
        if hit is not None:
            _ROPE_CACHE.move_to_end(key)
            return hit
        ang = rope_angles(config.head_dim, config.rope_theta, frame_start, frames, h, w, device)
        rope = Rope(torch.cos(ang).float()[:, None, :], torch.sin(ang).float()[:, None, :])
        _ROPE_CACHE[key] = rope
        if len(_ROPE_CACHE) > _ROPE_CACHE_SIZE:
            _ROPE_CACHE.popitem(last=False)
        return rope

    @staticmethod
    def cat(parts: list[Rope]) -> Rope:
        return Rope(torch.cat([p.cos for p in parts]), torch.cat([p.sin for p in parts]))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate adjacent pairs ``(x[2i], x[2i+1])`` of ``x [B, L, H, D]``; returns x's dtype."""
        xf = x.float().unflatten(-1, (-1, 2))  # [B, L, H, D/2, 2]
        x0, x1 = xf[..., 0], xf[..., 1]
        out = torch.stack([x0 * self.cos - x1 * self.sin, x0 * self.sin + x1 * self.cos], dim=-1)
        return out.flatten(-2).type_as(x)


_ROPE_CACHE: OrderedDict[tuple, Rope] = OrderedDict()
_ROPE_CACHE_SIZE = 32  # least recently used out: a few chunk positions of a few streams; tables are small
