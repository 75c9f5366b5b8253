"""Causal (streaming) forwards of the DiT over a :class:`~chameleon_core.cache.KVCache`.

Two passes exist, both thin wrappers over :meth:`WanModel.forward_frames`:

- :func:`prefill_conditions` runs the reference and garment frames at timestep 0 (RoPE frames 0 and 1), attending
  to each other only, and stores their keys/values in the reference and garment regions. Refresh and
  disentangle re-run it with one condition replaced and store only that segment.
- :func:`chunk_forward` runs a chunk of video frames whose slots were claimed with :meth:`KVCache.reserve`. It
  stores the chunk's keys/values (each denoising step overwrites them; the final clean pass at t = 0 leaves the
  ones that later chunks read) and attends to the conditions, the sink, the history window and itself.

Together they compute exactly the full forward under the block-causal in-context mask
(:func:`~chameleon_core.attention.frame_block_mask`); ``tests/test_cache.py`` checks this.
"""

from __future__ import annotations

import torch

from .cache import KVCache, Region
from .config import COND_FRAMES
from .model import TextContext, WanModel

REFERENCE_POSITION = 0
"""RoPE frame of the reference. A disentangled reference (the last generated frame) is also placed here: the model
only ever saw the reference at frame 0 in training, and keys are absolute, so frame 0 keeps its meaning."""
GARMENT_POSITION = 1


def prefill_conditions(
    model: WanModel,
    cache: KVCache,
    text: TextContext,
    reference: torch.Tensor,
    garment: torch.Tensor,
    *,
    store: tuple[bool, bool] = (True, True),
) -> None:
    """Run ``[reference, garment]`` (model-space latents ``[B, C, 1, H, W]`` each) at t = 0 and store their K/V.

    ``store`` chooses which of the two regions is written (a garment refresh stores only the garment).
    """
    x = torch.cat([reference, garment], dim=2)  # [B, C, 2, H, W]
    slots: list[int | None] = [
        cache.assign(Region.REFERENCE, REFERENCE_POSITION)[0] if store[0] else None,
        cache.assign(Region.GARMENT, GARMENT_POSITION)[0] if store[1] else None,
    ]
    if not cache.geometry.settings.conditions:
        raise ValueError("this stream has no reference or garment conditions to prefill (a text-/image-to-video "
                         "profile)")
    t = torch.zeros(x.shape[0], COND_FRAMES, device=model.device)
    model.forward_frames(x, t, REFERENCE_POSITION, text, cache.condition_plan(slots))


def chunk_forward(
    model: WanModel, cache: KVCache, text: TextContext, x: torch.Tensor, t: torch.Tensor, slots: list[int],
    *, condition_bias: float | None = None, local_frames: int | None = None, rope_offset: int = 0,
) -> torch.Tensor:
    """Predict the flow for a chunk ``x [B, C, F, H, W]`` at timestep ``t`` (``[B]`` or per frame ``[B, F]``).

    ``slots`` come from :meth:`KVCache.reserve` and fix the chunk's RoPE positions. Returns ``[B, C, F, H, W]``.
    ``condition_bias`` / ``local_frames``: the options of :meth:`KVCache.plan` (:mod:`chameleon_core.stream_options`).
    ``rope_offset``: added to the RoPE frame positions (LongLive 2.0's multi-shot offset); the cache bookkeeping
    keeps the frame positions.
    """
    b, f = x.shape[0], x.shape[2]
    if len(slots) != f:
        raise ValueError(f"chunk has {f} frames but {len(slots)} cache slots were reserved")
    t = t.to(model.device, torch.float32)
    frame_t = t[:, None].expand(b, f) if t.ndim == 1 else t
    start = cache.positions[slots[0]] + rope_offset
    plan = cache.plan(slots, condition_bias=condition_bias, local_frames=local_frames)
    return model.forward_frames(x, frame_t, start, text, plan)
