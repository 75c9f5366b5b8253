"""The Wan DiT (Wan2.1 T2V / Wan2.2 TI2V) with FashionChameleon's in-context conditioning.

Follows the official Wan reference (``wan/modules/model.py`` of Wan2.1 and Wan2.2): submodule names *are* the
checkpoint keys (the released layouts in ``tests/data/checkpoint-layouts/*.transformer.json``), and the numerics match it. The
residual stream, timestep embedding, modulation and RoPE run in fp32 as the reference does under its fp32
autocast regions; the linear layers run in the weight dtype.

In-context conditioning (``docs/design.md``, the objects that flow): reference and garment latents, one latent frame each, are placed in
front of the video frames at timestep 0, with RoPE frame positions 0 and 1; video frames continue from 2. Only the
video frames are returned.

The same blocks serve three forwards:

- :meth:`WanModel.forward` -- the plain bidirectional forward ``model(x, timestep, context)`` (optionally with
  conditions and a boolean attention mask, e.g. the block-causal teacher-forcing mask);
- :meth:`WanModel.forward_frames` -- the low-level forward over any run of frames at given RoPE positions, with a
  :class:`~chameleon_core.attention.SelfAttentionPlan` that decides which keys are visible. The streaming code
  uses it with a KV-cache plan (prefill, denoising passes and the clean pass all go through here).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .attention import SDPA, AttentionBackend, FullAttention, SelfAttentionPlan, attention
from .config import WanConfig
from .precision import Precision, fp32_view
from .rope import _ROPE_CACHE, Rope



# ---------------------------------------------------------------------------------------------------------------
# Small building blocks
# ---------------------------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """RMSNorm over the last dim, computed in fp32 (Wan's ``WanRMSNorm``)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = (xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)).type_as(x)
        return normed * self.weight.to(x.dtype)


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in fp32 (Wan's ``WanLayerNorm``); returns fp32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, fp32_view(self.weight), fp32_view(self.bias), self.eps)


def sinusoidal_embedding(dim: int, t: torch.Tensor) -> torch.Tensor:
    """Wan's timestep embedding: ``[cos(t w), sin(t w)]`` with ``w = 10000^(-i/half)``, in float64 -> fp32.

    t: ``[N]`` -> ``[N, dim]``.
    """
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    angles = t.to(torch.float64)[:, None] * freqs[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1).float()


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x * (1 + scale) + shift`` with per-group modulation.

    x: ``[B, L, C]`` fp32; shift, scale: ``[B, G, C]`` where G divides L (G = 1: one timestep per sample; G =
    frames: one per frame; G = L: one per token, as Wan2.2 takes it).
    """
    b, length, c = x.shape
    g = shift.shape[1]
    xg = x.view(b, g, length // g, c)
    return (xg * (1 + scale[:, :, None]) + shift[:, :, None]).view(b, length, c)


def norm_modulate(norm: LayerNorm32, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor,
                  out_dtype: torch.dtype) -> torch.Tensor:
    """``modulate(norm(x), shift, scale)`` in fp32, returned in ``out_dtype`` (the next linear's input dtype).

    fp32 models keep the reference's separate multiply and add bit for bit; in bf16/fp16 the modulation is one fused
    multiply-add in fp32 (as precise or more: one rounding instead of two) and the cast to the weight dtype is done
    here once, for all the projections that read it.
    """
    if out_dtype == torch.float32:
        return modulate(norm(x), shift, scale)
    b, length, c = x.shape
    g = shift.shape[1]
    xn = norm(x).view(b, g, length // g, c)
    return torch.addcmul(shift[:, :, None], xn, 1 + scale[:, :, None]).view(b, length, c).to(out_dtype)


def gate(x: torch.Tensor, gate_: torch.Tensor) -> torch.Tensor:
    """``x * gate`` with per-group gates ``[B, G, C]`` (see :func:`modulate`)."""
    b, length, c = x.shape
    g = gate_.shape[1]
    return (x.float().view(b, g, length // g, c) * gate_[:, :, None]).view(b, length, c)


def add_gated(residual: torch.Tensor, y: torch.Tensor, gate_: torch.Tensor) -> torch.Tensor:
    """``residual + y * gate`` (fp32 residual ``[B, L, C]``, gates ``[B, G, C]``): the reference's separate ops for
    fp32 ``y``; one fused multiply-add reading ``y`` in its own dtype otherwise (no separate upcast kernel)."""
    if y.dtype == torch.float32:
        return residual + gate(y, gate_)
    b, length, c = residual.shape
    g = gate_.shape[1]
    return torch.addcmul(residual.view(b, g, length // g, c), y.view(b, g, length // g, c), gate_[:, :, None]
                         ).view(b, length, c)


# ---------------------------------------------------------------------------------------------------------------
# Attention and blocks
# ---------------------------------------------------------------------------------------------------------------


class Projections(nn.Module):
    """q/k/v/o projections with RMSNorm on q and k over the full width: the parameters both attentions share."""

    def __init__(self, config: WanConfig) -> None:
        super().__init__()
        dim = config.dim
        self.num_heads = config.num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, config.eps) if config.qk_norm else nn.Identity()
        self.norm_k = RMSNorm(dim, config.eps) if config.qk_norm else nn.Identity()


class SelfAttention(Projections):
    """Wan self-attention: 3-axis RoPE on q and k; which keys are visible is up to the plan."""

    def forward(self, x: torch.Tensor, rope: Rope, plan: SelfAttentionPlan, layer: int, precision: Precision,
                backend: AttentionBackend) -> torch.Tensor:
        """x: ``[B, L, C]`` -> ``[B, L, C]``."""
        heads, linear = self.num_heads, precision.linear
        x = x.to(precision.activation_dtype(self.q))  # once for q, k and v
        q = rope.apply(rearrange(self.norm_q(linear(self.q, x)), "b l (h d) -> b l h d", h=heads))
        k = rope.apply(rearrange(self.norm_k(linear(self.k, x)), "b l (h d) -> b l h d", h=heads))
        v = rearrange(linear(self.v, x), "b l (h d) -> b l h d", h=heads)
        out = plan.attend(layer, q, k, v, backend)  # [B, L, H, D]
        return linear(self.o, rearrange(out, "b l h d -> b l (h d)"))


class CrossAttention(Projections):
    """Wan text cross-attention; its K/V depend only on the prompt and are cached per prompt."""

    def kv(self, context: torch.Tensor, precision: Precision) -> tuple[torch.Tensor, torch.Tensor]:
        """context: ``[B, Lc, C]`` -> k, v ``[B, Lc, H, D]``."""
        k = rearrange(self.norm_k(precision.linear(self.k, context)), "b l (h d) -> b l h d", h=self.num_heads)
        v = rearrange(precision.linear(self.v, context), "b l (h d) -> b l h d", h=self.num_heads)
        return k, v

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], precision: Precision,
                backend: AttentionBackend) -> torch.Tensor:
        """x: ``[B, L, C]``; kv from :meth:`kv` -> ``[B, L, C]``."""
        q = rearrange(self.norm_q(precision.linear(self.q, x)), "b l (h d) -> b l h d", h=self.num_heads)
        k, v = kv
        if k.shape[0] != q.shape[0]:  # one prompt shared by a batch
            k, v = k.expand(q.shape[0], -1, -1, -1), v.expand(q.shape[0], -1, -1, -1)
        return precision.linear(self.o, rearrange(attention(q, k, v, None, backend), "b l h d -> b l (h d)"))


class Block(nn.Module):
    """One Wan transformer block: modulated self-attention, cross-attention, modulated FFN."""

    def __init__(self, config: WanConfig) -> None:
        super().__init__()
        dim = config.dim
        self.norm1 = LayerNorm32(dim, config.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(config)
        self.norm3 = LayerNorm32(dim, config.eps, elementwise_affine=True) if config.cross_attn_norm else nn.Identity()
        self.cross_attn = CrossAttention(config)
        self.norm2 = LayerNorm32(dim, config.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, config.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(config.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(
        self,
        x: torch.Tensor,
        e0: torch.Tensor,
        rope: Rope,
        cross_kv: tuple[torch.Tensor, torch.Tensor],
        plan: SelfAttentionPlan,
        layer: int,
        precision: Precision,
        backend: AttentionBackend = SDPA,
    ) -> torch.Tensor:
        """x: ``[B, L, C]`` fp32 residual stream; e0: ``[B, G, 6, C]`` fp32 time projection; the model's precision
        policy and attention backend."""
        dt, linear = precision.activation_dtype(self.self_attn.q), precision.linear
        mod = fp32_view(self.modulation).unsqueeze(0) + e0  # [B, G, 6, C]
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.unbind(2)  # each [B, G, C]
        y = self.self_attn(norm_modulate(self.norm1, x, shift1, scale1, dt), rope, plan, layer, precision, backend)
        x = add_gated(x, y, gate1)
        y = self.cross_attn(self.norm3(x), cross_kv, precision, backend)  # [B, L, C]
        x = x + y  # fp32 residual; a bf16 y is promoted inside the add (no separate upcast kernel)
        y = linear(self.ffn[2], self.ffn[1](linear(self.ffn[0], norm_modulate(self.norm2, x, shift2, scale2, dt))))
        return add_gated(x, y, gate2)


class Head(nn.Module):
    """Output head: modulated LayerNorm then a linear map to ``out_dim * prod(patch)`` per token."""

    def __init__(self, config: WanConfig) -> None:
        super().__init__()
        dim = config.dim
        self.norm = LayerNorm32(dim, config.eps, elementwise_affine=False)
        self.head = nn.Linear(dim, config.out_dim * math.prod(config.patch_size))
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor, precision: Precision) -> torch.Tensor:
        """x: ``[B, L, C]``; e: ``[B, G, C]`` time embedding -> ``[B, L, out_dim * prod(patch)]`` fp32."""
        mod = fp32_view(self.modulation).unsqueeze(0) + e.unsqueeze(2)  # [B, G, 2, C]
        shift, scale = mod.unbind(2)
        return precision.linear(self.head, modulate(self.norm(x), shift, scale)).float()


# ---------------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextContext:
    """A prompt prepared for the blocks: per-layer cross-attention K/V, each ``[B, Lc, H, D]``."""

    kv: tuple[tuple[torch.Tensor, torch.Tensor], ...]

    def to(self, device: torch.device | str) -> TextContext:
        return TextContext(tuple((k.to(device), v.to(device)) for k, v in self.kv))

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.kv)


class WanModel(nn.Module):
    """Wan DiT. ``state_dict()`` names and shapes equal the released checkpoints'; the model has no buffers."""

    def __init__(self, config: WanConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.dim
        # 1. Patchify latents, embed text and time.
        self.patch_embedding = nn.Conv3d(config.in_dim, dim, kernel_size=config.patch_size, stride=config.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(config.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(config.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        # 2. Transformer blocks.
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.num_layers)])
        # 3. Output head.
        self.head = Head(config)

    # -- pieces -------------------------------------------------------------------------------------------------

    attention: AttentionBackend = SDPA
    """The attention kernel of this model's forwards (:mod:`chameleon_core.attention`): set per model (the pack's
    nodes give theirs ComfyUI's attention), never swapped for the whole process."""

    @property
    def precision(self) -> Precision:
        """The precision policy every forward of this model follows (:class:`~chameleon_core.precision.Precision`):
        the one set by fp8 storage, a module view or training, else compute in the weight dtype."""
        explicit = self.__dict__.get("_precision")
        return explicit if explicit is not None else Precision(self.blocks[0].self_attn.q.weight.dtype)

    @precision.setter
    def precision(self, policy: Precision | None) -> None:
        self.__dict__["_precision"] = policy

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype: activations, KV cache (:attr:`precision`'s). Equals the weight dtype unless block weights
        are stored in fp8."""
        return self.precision.compute

    @property
    def device(self) -> torch.device:
        return self.patch_embedding.weight.device

    def prepare_text(self, context: torch.Tensor) -> TextContext:
        """Prompt features ``[B, L, text_dim]`` (L <= text_len) -> cached cross-attention K/V for every block.

        The prompt is zero-padded to ``text_len`` tokens before the text embedding, as the reference does, so the
        padding rows contribute exactly as they do there.
        """
        cfg = self.config
        if context.ndim != 3 or context.shape[-1] != cfg.text_dim:
            raise ValueError(
                f"context must be [B, L, {cfg.text_dim}] text-encoder features, got shape {tuple(context.shape)}; "
                f"use the umT5-XXL encoder that matches this model (text_dim={cfg.text_dim})"
            )
        if context.shape[1] > cfg.text_len:
            raise ValueError(
                f"prompt has {context.shape[1]} tokens but the model takes at most text_len={cfg.text_len}; "
                "shorten the prompt"
            )
        pad = cfg.text_len - context.shape[1]
        ctx = F.pad(context.to(self.device, torch.float32), (0, 0, 0, pad))  # [B, text_len, text_dim]
        emb = self.text_embedding(ctx.to(self.dtype))  # [B, text_len, C]
        return TextContext(tuple(block.cross_attn.kv(emb, self.precision) for block in self.blocks))

    def embed_time(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Timesteps ``[B, G]`` -> embedding e ``[B, G, C]`` and block modulation e0 ``[B, G, 6, C]`` (fp32).

        Without gradient, the result is kept per timestep tensor: the chunk step hands the same tensor for the same
        timestep value to every chunk (:func:`~chameleon_core.chunk_step.timestep_tensor`), so each value is embedded
        once per stream. The key is the tensor's storage, view and version (the entry holds the tensor, so its
        storage cannot be reused by another) and the embedding weights' storage and version.
        """
        layers = (self.time_embedding[0], self.time_embedding[2], self.time_projection[1])
        if torch.is_grad_enabled() and any(p.requires_grad for m in layers for p in m.parameters()):
            return self._embed_time(t)
        # Inference tensors (ComfyUI runs nodes under inference_mode) carry no version counter, so a change could
        # not be seen: recompute instead of caching.
        # An entry made under inference_mode holds inference tensors, which autograd may not save: never cache there.
        params = tuple(p for m in layers for p in m.parameters())
        if torch.is_inference_mode_enabled() or t.is_inference() or any(p.is_inference() for p in params):
            return self._embed_time(t)
        key = (t.data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t._version, t.dtype, t.device,
               tuple((p.data_ptr(), p._version) for p in params))
        cache = self.__dict__.setdefault("_time_cache", OrderedDict())
        hit = cache.get(key)
        # The entry holds the timestep tensor (so its storage cannot be reused while cached) and the weights it was
        # made from, and a hit must be those very weights: a freed weight's address reused by a new one never matches.
        if hit is not None and all(a is b for a, b in zip(hit[3], params, strict=True)):
            cache.move_to_end(key)
            return hit[1], hit[2]
        e, e0 = self._embed_time(t)
        cache[key] = (t, e, e0, params)
        if len(cache) > 16:
            cache.popitem(last=False)
        return e, e0

    def _embed_time(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, g = t.shape
        embed, project = self.precision.linear_of("time_embedding"), self.precision.linear_of("time_projection")
        e = embed(self.time_embedding[0], sinusoidal_embedding(self.config.freq_dim, t.reshape(-1)))
        e = embed(self.time_embedding[2], F.silu(e)).view(b, g, -1)  # [B, G, C]
        e0 = project(self.time_projection[1], F.silu(e)).unflatten(-1, (6, self.config.dim))  # [B, G, 6, C]
        return e, e0

    def patchify(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """Latents ``[B, C, T, H, W]`` -> tokens ``[B, T*h*w, dim]`` (fp32) and the token grid (T, h, w)."""
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_dim:
            raise ValueError(
                f"latents must be [B, {cfg.in_dim}, T, H, W] for this model, got shape {tuple(x.shape)}; "
                f"check that the VAE family matches the model ({cfg.latent.name}: {cfg.in_dim} channels)"
            )
        pt, ph, pw = cfg.patch_size
        if x.shape[2] % pt or x.shape[3] % ph or x.shape[4] % pw:
            raise ValueError(
                f"latent size {tuple(x.shape[2:])} (T, H, W) is not divisible by the patch size {cfg.patch_size}; "
                "use a pixel resolution that is a multiple of 32 (Wan2.2) / 16 (Wan2.1)"
            )
        tokens = self.patch_embedding(x.to(self.dtype))  # [B, C, T', h, w]
        grid = tuple(tokens.shape[2:])
        return rearrange(tokens, "b c t h w -> b (t h w) c").float(), grid  # [B, L, C]

    def unpatchify(self, tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """Head output ``[B, T*h*w, out*pt*ph*pw]`` -> latents ``[B, out, T*pt, h*ph, w*pw]``."""
        f, h, w = grid
        pt, ph, pw = self.config.patch_size
        # Each token's head output is its patch, ordered (pt, ph, pw, channel) as the reference's unpatchify.
        pattern = "b (f h w) (pt ph pw c) -> b c (f pt) (h ph) (w pw)"
        return rearrange(tokens, pattern, f=f, h=h, w=w, pt=pt, ph=ph, pw=pw)

    def run_blocks(
        self, x: torch.Tensor, t: torch.Tensor, rope: Rope, text: TextContext, plan: SelfAttentionPlan
    ) -> torch.Tensor:
        """Tokens ``[B, L, C]`` with timesteps ``[B, G]`` (G divides L) -> head output ``[B, L, out*prod(patch)]``."""
        e, e0 = self.embed_time(t)
        precision, backend = self.precision, self.attention
        for i, block in enumerate(self.blocks):
            x = block(x, e0, rope, text.kv[i], plan, i, precision, backend)
        return self.head(x, e, precision)

    def clear_caches(self) -> WanModel:
        """Drop the derived caches (timestep embeddings, fp32 copies of small weights, RoPE tables).

        They notice weights replaced or changed in place through the parameter itself, but not writes through
        ``p.data`` (a separate version counter): call this after changing weights that way. Moving the model
        (``.to``) clears them too, so no copy stays pinned on the old device.
        """
        self.__dict__.pop("_time_cache", None)
        for p in self.parameters():
            if hasattr(p, "_fp32_shadow"):
                del p._fp32_shadow
        _ROPE_CACHE.clear()
        return self

    def _apply(self, fn, *args, **kwargs):
        self.clear_caches()
        return super()._apply(fn, *args, **kwargs)

    def compile_blocks(self, **options) -> WanModel:
        """``torch.compile`` every transformer block in place (``nn.Module.compile``: parameter names and the
        ``state_dict`` are unchanged); ``options`` go to ``torch.compile`` (e.g. ``mode="max-autotune-no-cudagraphs"``,
        ``dynamic=False``). Shapes are static per stream (chunk, grid, cache length), so each block compiles once per
        shape: a prefill, the chunk passes and a switch's one-frame pass. Returns the model."""
        for block in self.blocks:
            block.compile(**options)
        return self

    # -- forwards -----------------------------------------------------------------------------------------------

    def forward_frames(
        self,
        x: torch.Tensor,
        frame_t: torch.Tensor,
        frame_start: int | list[int],
        text: TextContext,
        plan: SelfAttentionPlan,
    ) -> torch.Tensor:
        """Forward over a run of latent frames at RoPE frame positions ``frame_start ..``.

        x: ``[B, C, F, H, W]`` model-space latents; frame_t: ``[B, F]`` one timestep per frame; frame_start: the
        first frame's position (frames are consecutive) or an explicit list of F positions. The plan decides which
        keys each layer attends to (for a KV cache it also stores this run's keys). Returns the flow prediction
        ``[B, out, F, H, W]`` in fp32.
        """
        tokens, grid = self.patchify(x)
        f, h, w = grid
        if isinstance(frame_start, int):
            rope = Rope.for_frames(self.config, frame_start, f, h, w, tokens.device)
        else:
            if len(frame_start) != f:
                raise ValueError(f"got {len(frame_start)} frame positions for {f} frames")
            rope = Rope.cat([Rope.for_frames(self.config, p, 1, h, w, tokens.device) for p in frame_start])
        out = self.run_blocks(tokens, frame_t.to(tokens.device, torch.float32), rope, text, plan)
        return self.unpatchify(out, grid)

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor | TextContext,
        *,
        reference: torch.Tensor | None = None,
        garment: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        condition_bias: float | None = None,
    ) -> torch.Tensor:
        """Plain bidirectional forward, as the reference ``WanModel(x, t, context)``.

        x: ``[B, C, T, H, W]`` model-space latents (convert raw VAE latents with
        :func:`chameleon_core.latents.to_model_space`); timestep: ``[B]`` or per token ``[B, T*h*w]`` (Wan2.2);
        context: ``[B, L, text_dim]`` or a prepared :class:`TextContext`. Optional ``reference`` / ``garment``
        ``[B, C, 1, H, W]`` are prepended at timestep 0 with RoPE frames 0 and 1 (video from 2). ``attn_mask``:
        boolean ``[L, L]`` over all tokens, conditions first. Returns the prediction for the video frames only,
        ``[B, out, T, H, W]`` fp32. ``condition_bias``: an additive logit bias on the condition keys for the video
        queries (condition weighting, :mod:`chameleon_core.stream_options`); None or omitted is the plain forward.
        """
        conds = [c for c in (reference, garment) if c is not None]
        if len(conds) == 1:
            raise ValueError("pass both reference and garment latents, or neither; got only one")
        for c in conds:
            if c.ndim != 5 or c.shape[2] != 1 or c.shape[0] != x.shape[0] or c.shape[3:] != x.shape[3:]:
                raise ValueError(
                    f"condition latents must be one latent frame [B, C, 1, H, W] matching the video "
                    f"{tuple(x.shape)}; got {tuple(c.shape)}. Encode the image at the video resolution"
                )
        text = context if isinstance(context, TextContext) else self.prepare_text(context)
        tokens, grid = self.patchify(torch.cat(conds + [x], dim=2) if conds else x)
        b, length, _ = tokens.shape
        n_cond = len(conds)
        tpf = grid[1] * grid[2]
        video_len = length - n_cond * tpf
        t = timestep.to(tokens.device, torch.float32)
        if t.ndim == 1:
            # One timestep per frame, not per token: the embedding and its 6C projection run once per frame.
            t = t[:, None].expand(b, grid[0] - n_cond)
            if n_cond:
                t = torch.cat([t.new_zeros(b, n_cond), t], dim=1)  # conditions are clean: t = 0
        elif t.shape != (b, video_len):
            raise ValueError(
                f"timestep must be [B] or per token [B, {video_len}], got shape {tuple(timestep.shape)}"
            )
        elif n_cond:
            t = torch.cat([t.new_zeros(b, n_cond * tpf), t], dim=1)  # conditions are clean: t = 0
        rope = Rope.for_frames(self.config, 0, grid[0], grid[1], grid[2], tokens.device)
        plan = FullAttention(attn_mask) if condition_bias is None else FullAttention(attn_mask, condition_bias, n_cond * tpf)
        out = self.run_blocks(tokens, t, rope, text, plan)
        return self.unpatchify(out[:, n_cond * tpf :], (grid[0] - n_cond, grid[1], grid[2]))
