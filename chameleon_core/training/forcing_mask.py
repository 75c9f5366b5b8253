"""The in-context teacher-forcing sequence and its attention mask (the authors' ``causal_model.py:
_prepare_in_context_teacher_forcing_mask``; ``docs/design.md``, the facts).

Sequence: ``[clean reference, clean garment, clean video | noisy reference, noisy garment, noisy video]``; both
halves sit at RoPE frames ``0 .. 2 + F - 1``. With chunks of ``c`` latent frames:

- clean conditions attend to the clean conditions only;
- clean chunk b attends to the clean conditions and clean chunks 0..b (block-causal, itself included);
- noisy conditions attend to the noisy conditions only (they never reach the loss and nothing attends to them);
- noisy chunk b attends to itself, the clean conditions and clean chunks 0..b-1 -- never to other noisy tokens.

So noisy chunk b sees exactly what the streaming student sees when it denoises chunk b over a cache of clean
history. The mask is built per frame and expanded to tokens: an SDPA boolean mask ``[L, L]``, or a FlexAttention
``BlockMask`` (CUDA) whose ``mask_mod`` reads the same frame table.
"""

from __future__ import annotations

import logging

import torch

from chameleon_core.attention import FullAttention, SelfAttentionPlan
from chameleon_core.config import COND_FRAMES

logger = logging.getLogger(__name__)


def forcing_frame_mask(num_frames: int, chunk_frames: int, cond: int = COND_FRAMES) -> torch.Tensor:
    """Frame-level mask ``[2N, 2N]`` (N = cond + num_frames; True = attend) of the teacher-forcing sequence."""
    if num_frames % chunk_frames:
        raise ValueError(
            f"{num_frames} latent video frames do not split into chunks of {chunk_frames}; use a frame count whose "
            f"latent frames ((frames - 1) / 4 + 1) are a multiple of forcing.chunk_frames"
        )
    n = cond + num_frames
    idx = torch.arange(2 * n)
    noisy = idx >= n
    local = idx % n
    chunk = torch.where(local < cond, -1, (local - cond) // chunk_frames)  # -1 for conditions
    q_noisy, k_noisy = noisy[:, None], noisy[None, :]
    q_chunk, k_chunk = chunk[:, None], chunk[None, :]
    k_clean_cond = ~k_noisy & (k_chunk < 0)
    clean_q = torch.where(q_chunk < 0, k_clean_cond, ~k_noisy & (k_chunk <= q_chunk))
    noisy_q = torch.where(
        q_chunk < 0,
        k_noisy & (k_chunk < 0),
        (k_noisy & (k_chunk == q_chunk)) | k_clean_cond | (~k_noisy & (k_chunk >= 0) & (k_chunk < q_chunk)),
    )
    return torch.where(q_noisy, noisy_q, clean_q)


def forcing_token_mask(num_frames: int, chunk_frames: int, tokens_per_frame: int,
                       device: torch.device | str | None = None) -> torch.Tensor:
    """Token-level boolean mask ``[L, L]`` for SDPA (L = 2 (2 + F) tokens_per_frame)."""
    m = forcing_frame_mask(num_frames, chunk_frames)
    m = m.repeat_interleave(tokens_per_frame, 0).repeat_interleave(tokens_per_frame, 1)
    return m.to(device) if device is not None else m


class FlexForcingAttention:
    """:class:`~chameleon_core.attention.SelfAttentionPlan` with a FlexAttention block mask (skips empty blocks)."""

    def __init__(self, num_frames: int, chunk_frames: int, tokens_per_frame: int, device: torch.device) -> None:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        frames = forcing_frame_mask(num_frames, chunk_frames).to(device)
        tpf = tokens_per_frame
        length = frames.shape[0] * tpf

        def mask_mod(b, h, q_idx, kv_idx):
            return frames[q_idx // tpf, kv_idx // tpf]

        self.mask_mod = mask_mod
        self.block_mask = create_block_mask(mask_mod, None, None, length, length, device=str(device))
        self._flex = torch.compile(flex_attention) if device.type == "cuda" else flex_attention

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend=None) -> torch.Tensor:
        """Flex attention with the block mask (the model's backend is not used: this plan runs its own kernel)."""
        out = self._flex(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=self.block_mask)
        return out.transpose(1, 2)


def forcing_plan(num_frames: int, chunk_frames: int, tokens_per_frame: int, device: torch.device,
                 backend: str = "auto") -> SelfAttentionPlan:
    """The attention plan for a teacher-forcing forward: ``flex`` / ``sdpa`` / ``auto`` (flex on CUDA if present)."""
    if backend not in ("auto", "flex", "sdpa"):
        raise ValueError(f"forcing.attention must be 'auto', 'flex' or 'sdpa', got {backend!r}")
    if backend == "auto":
        try:
            import torch.nn.attention.flex_attention  # noqa: F401

            backend = "flex" if device.type == "cuda" else "sdpa"
        except ImportError:
            backend = "sdpa"
    if backend == "flex":
        return FlexForcingAttention(num_frames, chunk_frames, tokens_per_frame, device)
    return FullAttention(forcing_token_mask(num_frames, chunk_frames, tokens_per_frame, device))


def forcing_forward(model, clean: torch.Tensor, noisy: torch.Tensor, reference: torch.Tensor, garment: torch.Tensor,
                    video_t: torch.Tensor, context: torch.Tensor, chunk_frames: int, backend: str = "auto",
                    position_offset: int = 0):
    """The teacher-forced forward: prediction for the noisy video frames ``[B, C, F, h, w]`` (fp32).

    clean / noisy: ``[B, C, F, h, w]`` model-space video; reference / garment ``[B, C, 1, h, w]``; video_t: ``[B, F]``
    the timesteps the DiT is fed for the noisy frames (conditions and clean frames get 0); context ``[B, L, D]``.
    ``position_offset``: the RoPE positions of the video frames after the first chunk move this many frames later,
    the first chunk keeping its own: what a stream longer than the clip attends to (its sink at the first chunk's
    positions, its window and the chunk being made later). Call it through :func:`~.parallel.run_inside` under
    FSDP (it uses ``forward_frames``).
    """
    b, _, f, h, w = clean.shape
    n = COND_FRAMES + f
    x = torch.cat([reference, garment, clean, reference, garment, noisy], dim=2)  # [B, C, 2n, h, w]
    zeros = video_t.new_zeros(b, COND_FRAMES)
    frame_t = torch.cat([zeros, torch.zeros_like(video_t), zeros, video_t], dim=1)  # [B, 2n]
    tpf = model.config.tokens_per_latent_grid(h, w)
    plan = forcing_plan(f, chunk_frames, tpf, clean.device, backend)
    text = model.prepare_text(context)
    if position_offset < 0:
        raise ValueError(f"position_offset must be >= 0, got {position_offset}")
    # the first chunk keeps its positions (the stream's sink); the later chunks move by position_offset
    positions = (list(range(COND_FRAMES)) + [COND_FRAMES + i + (position_offset if i >= chunk_frames else 0)
                                             for i in range(f)]) * 2
    out = model.forward_frames(x, frame_t, positions, text, plan)  # [B, C, 2n, h, w]
    return out[:, :, n + COND_FRAMES :]
