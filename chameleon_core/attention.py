"""The single attention entry point of the core.

Every attention call in the model goes through :func:`attention`, so a faster backend (FlashAttention, SageAttention,
an fp8 kernel) plugs in at one place with :func:`set_attention_backend`. The default is PyTorch's
``scaled_dot_product_attention``, which picks flash / memory-efficient kernels on GPU by itself.

Also builds the boolean masks used by the full (non-cached) forwards: the block-causal in-context mask of
FashionChameleon's teacher forcing, and its sink + window variant that a rolling KV cache is equivalent to.
"""

from __future__ import annotations

import logging
from typing import Callable, Protocol

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    # SDPA wants [B, H, L, D]; the model keeps [B, L, H, D] so heads split without a copy.
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


_backend: AttentionFn = _sdpa
_backend_takes_mask = True


def set_attention_backend(fn: AttentionFn | None, *, takes_mask: bool = True) -> None:
    """Install ``fn(q, k, v, mask) -> out`` (all ``[B, L, H, D]``; mask boolean, True = attend) or reset to SDPA.

    ``takes_mask=False``: ``fn`` is only handed unmasked calls (it gets ``mask=None``); masked calls take the core
    path (SDPA). Inside ComfyUI the pack installs ComfyUI's own attention this way (``nodes/adapters.py``)."""
    global _backend, _backend_takes_mask
    _backend = _sdpa if fn is None else fn
    _backend_takes_mask = True if fn is None else takes_mask
    logger.info("attention backend: %s", getattr(_backend, "__name__", repr(_backend)))


def attention_backend() -> AttentionFn:
    """The installed backend (SDPA unless :func:`set_attention_backend` installed another)."""
    return _backend


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head attention.

    q: ``[B, Lq, H, D]``; k, v: ``[B, Lk, H, D]``; mask: boolean, broadcastable to ``[B, H, Lq, Lk]``, True where
    a query may attend. Returns ``[B, Lq, H, D]`` in q's dtype.
    """
    if mask is not None and not _backend_takes_mask:
        return _sdpa(q, k, v, mask)
    return _backend(q, k, v, mask)


class SelfAttentionPlan(Protocol):
    """Decides which keys/values a self-attention layer sees.

    The model computes the layer's own q, k, v (RoPE applied) and hands them here; a plan for a plain forward attends
    to them (optionally masked), a cached plan also writes k, v into a :class:`~chameleon_core.cache.KVCache` and
    attends over the cache.
    """

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor: ...


class FullAttention:
    """Plain self-attention over the current tokens, with an optional boolean mask ``[Lq, Lk]``."""

    def __init__(self, mask: torch.Tensor | None = None) -> None:
        self.mask = mask

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return attention(q, k, v, self.mask)


def frame_block_mask(
    num_cond: int,
    num_frames: int,
    chunk_frames: int,
    tokens_per_frame: int,
    *,
    sink_chunks: int | None = None,
    window_chunks: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Token-level mask ``[L, L]`` (True = attend) over ``[cond frames, video frames]``.

    - Condition frames attend to each other only.
    - Video chunk ``k`` (``chunk_frames`` frames each) attends to the conditions, to earlier chunks and to itself:
      FashionChameleon's block-causal in-context mask.
    - With ``window_chunks`` set, chunk ``k`` sees only chunks ``k - window_chunks + 1 .. k`` plus the first
      ``sink_chunks`` chunks: exactly the keys a rolling cache holds (sink + FIFO window including the current
      chunk).
    """
    chunk_of = torch.full((num_cond + num_frames,), -1, dtype=torch.long)
    chunk_of[num_cond:] = torch.arange(num_frames) // chunk_frames
    qc = chunk_of[:, None]
    kc = chunk_of[None, :]
    cond_q, cond_k = qc < 0, kc < 0
    frame_mask = torch.where(cond_q, cond_k, cond_k | (kc <= qc))
    if window_chunks is not None:
        sink = sink_chunks or 0
        in_window = (kc > qc - window_chunks) | (kc < sink)
        frame_mask = torch.where(cond_q | cond_k, frame_mask, frame_mask & in_window)
    mask = frame_mask.repeat_interleave(tokens_per_frame, 0).repeat_interleave(tokens_per_frame, 1)
    return mask.to(device) if device is not None else mask
