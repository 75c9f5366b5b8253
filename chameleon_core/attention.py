"""The single attention entry point of the core, and the attention backend as a property of the model.

Every attention call in the model goes through :func:`attention` with the model's :class:`AttentionBackend`
(``WanModel.attention``: the model hands it to its blocks and their plans on every call), so a faster kernel
(FlashAttention, SageAttention, ComfyUI's ``optimized_attention``) is set per model, never swapped for the whole
process: the pack's nodes give the models they load ComfyUI's attention, while a model built elsewhere in the same
process keeps PyTorch's ``scaled_dot_product_attention`` (:data:`SDPA`, which picks flash / memory-efficient kernels
on GPU by itself).

Also builds the boolean masks used by the full (non-cached) forwards: the block-causal in-context mask of
FashionChameleon's teacher forcing, and its sink + window variant that a rolling KV cache is equivalent to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
import torch.nn.functional as F

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    # SDPA wants [B, H, L, D]; the model keeps [B, L, H, D] so heads split without a copy.
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


@dataclass(frozen=True)
class AttentionBackend:
    """An attention kernel ``fn(q, k, v, mask) -> out`` (all ``[B, L, H, D]``; mask boolean, True = attend).

    ``takes_mask=False``: ``fn`` is only handed unmasked calls; masked calls take PyTorch's SDPA (ComfyUI's kernels
    differ in which masks they take)."""

    fn: AttentionFn
    takes_mask: bool = True
    name: str = ""

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None and not self.takes_mask:
            return _sdpa(q, k, v, mask)
        return self.fn(q, k, v, mask)


SDPA = AttentionBackend(_sdpa, name="sdpa")
"""PyTorch's ``scaled_dot_product_attention``: every model's backend unless it is given another."""


def _sdpa_fp32(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    with torch.autocast(q.device.type, enabled=False):
        return _sdpa(q.float(), k.float(), v.float(), mask).to(q.dtype)


SDPA_FP32 = AttentionBackend(_sdpa_fp32, name="sdpa-fp32")
"""SDPA computed in fp32 whatever the inputs' dtype (out in q's dtype): a bf16 trainer's attention on CPU, where
PyTorch's bf16 flash-attention backward is about 3x slower than fp32's (measured on the 2-core CI CPU)."""


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
              backend: AttentionBackend = SDPA) -> torch.Tensor:
    """Multi-head attention with ``backend``.

    q: ``[B, Lq, H, D]``; k, v: ``[B, Lk, H, D]``; mask: boolean, broadcastable to ``[B, H, Lq, Lk]``, True where
    a query may attend. Returns ``[B, Lq, H, D]`` in q's dtype.
    """
    return backend(q, k, v, mask)


class SelfAttentionPlan(Protocol):
    """Decides which keys/values a self-attention layer sees.

    The model computes the layer's own q, k, v (RoPE applied) and hands them here; a plan for a plain forward attends
    to them (optionally masked), a cached plan also writes k, v into a :class:`~chameleon_core.cache.KVCache` and
    attends over the cache.
    """

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               backend: AttentionBackend = SDPA) -> torch.Tensor:
        """``backend``: the model's attention backend (a plan may run its own kernel, e.g. flex attention)."""
        ...


class FullAttention:
    """Plain self-attention over the current tokens, with an optional boolean mask ``[Lq, Lk]``.

    ``condition_bias`` (optional): an additive logit bias on the first ``cond_tokens`` keys (reference and garment)
    for the queries after them (the video); the condition queries are left as they are. None is the plain path.
    """

    def __init__(self, mask: torch.Tensor | None = None, condition_bias: float | None = None,
                 cond_tokens: int = 0) -> None:
        self.mask = mask
        self.condition_bias, self.cond_tokens = condition_bias, cond_tokens

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               backend: AttentionBackend = SDPA) -> torch.Tensor:
        if self.condition_bias is None:
            return attention(q, k, v, self.mask, backend)
        n, mask = self.cond_tokens, self.mask
        bias = condition_key_bias(self.condition_bias, n, k.shape[1], q.device)
        video = attention_with_key_bias(q[:, n:], k, v, bias, None if mask is None else mask[n:])
        if n == 0:
            return video
        cond = attention(q[:, :n], k, v, None if mask is None else mask[:n], backend)
        return torch.cat([cond, video], dim=1)


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


# -- options of the pack (issue 16): condition weighting and frame-local attention --------------------------------


def attention_with_key_bias(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_bias: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """:func:`attention` with ``key_bias`` (float ``[Lk]``) added to every query's logits before the softmax.

    CustomCrafter-style condition weighting: a negative bias on the reference and garment keys makes the video
    attend to them less. ``mask`` (boolean, True = attend, broadcastable to ``[B, H, Lq, Lk]``) still applies: a
    masked key gets -inf whatever its bias. This always runs PyTorch SDPA with a float mask (an installed backend
    takes boolean masks only); callers use it only when a bias is set, so the default path never reaches it.
    """
    bias = key_bias.to(device=q.device, dtype=q.dtype)[None, None, None, :]
    if mask is not None:
        bias = torch.where(mask.to(q.device), bias, torch.tensor(float("-inf"), device=q.device, dtype=q.dtype))
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=bias)
    return out.transpose(1, 2)


def condition_key_bias(bias: float, cond_tokens: int, key_tokens: int, device: torch.device | str) -> torch.Tensor:
    """The key bias vector ``[key_tokens]``: ``bias`` on the first ``cond_tokens`` keys (reference and garment),
    0 on the rest."""
    out = torch.zeros(key_tokens, device=device)
    out[:cond_tokens] = bias
    return out


def local_frame_mask(
    num_cond: int,
    num_frames: int,
    chunk_frames: int,
    tokens_per_frame: int,
    *,
    sink_frames: int,
    local_frames: int,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """FastVMT-style frame-local variant of :func:`frame_block_mask` (token-level ``[L, L]``, True = attend).

    Video chunk ``k`` (first frame ``f = k * chunk_frames``) attends to the conditions, the first ``sink_frames``
    video frames (the sink), its own chunk and only the ``local_frames`` video frames just before it
    (``f - local_frames .. f - 1``). Condition frames attend to each other only. This is what a cached stream with
    ``local_frames`` computes, as long as its FIFO window holds at least those frames.
    """
    if local_frames < 1:
        raise ValueError(f"local_frames must be >= 1, got {local_frames}")
    frame = torch.arange(num_cond + num_frames) - num_cond  # < 0 for conditions
    chunk_of = torch.where(frame < 0, torch.full_like(frame, -1), frame.clamp(min=0) // chunk_frames)
    qc, kc = chunk_of[:, None], chunk_of[None, :]
    kf = frame[None, :]
    first = qc * chunk_frames
    video_keys = (kc == qc) | ((kf < sink_frames) & (kc <= qc)) | ((kf >= first - local_frames) & (kc < qc))
    frame_mask = torch.where(qc < 0, kc < 0, (kc < 0) | video_keys)
    mask = frame_mask.repeat_interleave(tokens_per_frame, 0).repeat_interleave(tokens_per_frame, 1)
    return mask.to(device) if device is not None else mask
