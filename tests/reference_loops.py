"""Independent re-implementations of the public causal students' inference loops, for the profile parity tests.

Each loop is written from the project's public repository (the rule, file and function are named where they are
used; ``docs/profiles.md`` lists them) and shares no streaming, cache, schedule or attention code with the pack:

- :class:`WanForward` is its own Wan DiT forward (after the official ``wan/modules/model.py``: complex RoPE in
  float64, per-frame modulation) over the pack model's *weights* only, read by name from its ``state_dict``;
  self-attention hands ``(layer, q, k, v)`` to the loop's own KV bookkeeping;
- each project's KV cache is kept as the project keeps it: token buffers with ``global_end_index`` /
  ``local_end_index``, rolled left past a sink (LongLive, Self-Forcing), absolute slots (CausVid), LongLive 2.0's
  pinned shot sink;
- timesteps come from each project's ``FlowMatchScheduler`` table (float32, as ``utils/scheduler.py`` builds it)
  and its own lookups; LongLive 2.0's UniPC is diffusers' ``UniPCMultistepScheduler`` set up as Wan's
  ``FlowUniPCMultistepScheduler``.

Tensors use the projects' layout ``[B, F, C, H, W]``. Noise comes from a ``noise(block, step)`` callable (the
projects draw it from the CUDA RNG, which no CPU test can replay). The projects hard-code 1560 tokens per frame in
some buffer sizes (Self-Forcing's and CausVid's 32760-token cache is 21 frames at 832x480, LongLive 1.0's 12-frame
window is sized ``12 * 1560``); here every size is in the frame's real token count, which is the same rule at the
native size and the only meaningful one at the tiny test size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

Noise = Callable[[int, int], torch.Tensor]
"""``noise(block, step) -> [B, F, C, H, W]``: step 0 is the block's starting noise, step i > 0 its re-noising."""


# ---------------------------------------------------------------------------------------------------------------
# The Wan forward (after wan/modules/model.py), over given weights
# ---------------------------------------------------------------------------------------------------------------


def _sinusoid(dim: int, t: torch.Tensor) -> torch.Tensor:
    """``sinusoidal_embedding_1d``: float64 cos / sin of ``t * 10000^(-i/half)``."""
    half = dim // 2
    pos = t.to(torch.float64)
    ang = torch.outer(pos, torch.pow(10000, -torch.arange(half, dtype=torch.float64).div(half)))
    return torch.cat([torch.cos(ang), torch.sin(ang)], dim=1)


def _layer_norm(x: torch.Tensor, eps: float, weight=None, bias=None) -> torch.Tensor:
    return F.layer_norm(x.float(), x.shape[-1:], weight, bias, eps)


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight


class WanForward:
    """A Wan DiT forward written after the official reference, reading the pack model's weights by name."""

    def __init__(self, model) -> None:
        self.p = {k: v.detach().float() for k, v in model.state_dict().items()}
        cfg = model.config
        self.dim, self.heads, self.layers = cfg.dim, cfg.num_heads, cfg.num_layers
        self.head_dim = cfg.dim // cfg.num_heads
        self.patch = tuple(cfg.patch_size)
        self.out_dim, self.freq_dim, self.text_len, self.eps = cfg.out_dim, cfg.freq_dim, cfg.text_len, cfg.eps
        self.theta = cfg.rope_theta

    def _lin(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.p[name + ".weight"], self.p.get(name + ".bias"))

    def embed_text(self, context: torch.Tensor) -> torch.Tensor:
        """``[B, L, text_dim]`` -> ``[B, text_len, dim]`` (zero-padded to text_len first, as the reference)."""
        ctx = torch.cat([context.float(), context.new_zeros(context.shape[0], self.text_len - context.shape[1],
                                                            context.shape[2]).float()], dim=1)
        return self._lin("text_embedding.2", F.gelu(self._lin("text_embedding.0", ctx), approximate="tanh"))

    def _freqs(self, start: float, frames: int, h: int, w: int) -> torch.Tensor:
        """Complex RoPE factors ``[frames*h*w, 1, head_dim/2]``; the frame axis starts at ``start`` (an offset
        included), the spatial axes at 0 (``rope_params`` + ``causal_rope_apply``)."""
        c = self.head_dim // 2
        dims = [c - 2 * (c // 3), c // 3, c // 3]

        def axis(n_pairs: int, positions: torch.Tensor) -> torch.Tensor:
            d = 2 * n_pairs
            inv = 1.0 / torch.pow(self.theta, torch.arange(0, d, 2, dtype=torch.float64).div(d))
            ang = torch.outer(positions, inv)
            return torch.polar(torch.ones_like(ang), ang)

        f_ax = axis(dims[0], torch.arange(frames, dtype=torch.float64) + start)
        h_ax = axis(dims[1], torch.arange(h, dtype=torch.float64))
        w_ax = axis(dims[2], torch.arange(w, dtype=torch.float64))
        out = torch.cat([f_ax[:, None, None].expand(frames, h, w, -1), h_ax[None, :, None].expand(frames, h, w, -1),
                         w_ax[None, None, :].expand(frames, h, w, -1)], dim=-1)
        return out.reshape(frames * h * w, 1, -1)

    @staticmethod
    def _rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
        xc = torch.view_as_complex(x.to(torch.float64).reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(xc * freqs).flatten(-2).float()

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, start: float,
                 attend: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Flow prediction for ``x [B, F, C, H, W]`` at per-frame timesteps ``t [B, F]``; ``context`` from
        :meth:`embed_text`; the frames' RoPE positions start at ``start``; ``attend(layer, q, k, v)`` (roped q, k
        ``[B, L, n, d]``) does the self-attention against the loop's cache."""
        b, f = x.shape[:2]
        pt, ph, pw = self.patch
        tokens = F.conv3d(x.permute(0, 2, 1, 3, 4).float(), self.p["patch_embedding.weight"],
                          self.p["patch_embedding.bias"], stride=self.patch)  # [B, dim, f, h, w]
        gf, gh, gw = tokens.shape[2:]
        xs = tokens.flatten(2).transpose(1, 2)  # [B, L, dim]
        per = gh * gw
        e = self._lin("time_embedding.2", F.silu(self._lin("time_embedding.0", _sinusoid(self.freq_dim, t.flatten())
                                                                            .float())))
        e0 = self._lin("time_projection.1", F.silu(e)).unflatten(1, (6, self.dim)).unflatten(0, (b, f))  # [B,F,6,C]
        e = e.unflatten(0, (b, f))  # [B, F, C]
        freqs = self._freqs(start, gf, gh, gw)
        n, d = self.heads, self.head_dim
        for i in range(self.layers):
            pre = f"blocks.{i}."
            mod = (self.p[pre + "modulation"].unsqueeze(1) + e0).chunk(6, dim=2)  # each [B, F, 1, C]

            def frames_view(y):
                return y.unflatten(1, (gf, per))

            y = (frames_view(_layer_norm(xs, self.eps)) * (1 + mod[1]) + mod[0]).flatten(1, 2)
            q = _rms(self._lin(pre + "self_attn.q", y), self.p[pre + "self_attn.norm_q.weight"], self.eps)
            k = _rms(self._lin(pre + "self_attn.k", y), self.p[pre + "self_attn.norm_k.weight"], self.eps)
            v = self._lin(pre + "self_attn.v", y).view(b, -1, n, d)
            q = self._rope(q.view(b, -1, n, d), freqs)
            k = self._rope(k.view(b, -1, n, d), freqs)
            att = attend(i, q, k, v).flatten(2)
            xs = xs + (frames_view(self._lin(pre + "self_attn.o", att)) * mod[2]).flatten(1, 2)
            yc = _layer_norm(xs, self.eps, self.p[pre + "norm3.weight"], self.p[pre + "norm3.bias"])
            cq = _rms(self._lin(pre + "cross_attn.q", yc), self.p[pre + "cross_attn.norm_q.weight"], self.eps)
            ck = _rms(self._lin(pre + "cross_attn.k", context), self.p[pre + "cross_attn.norm_k.weight"], self.eps)
            cv = self._lin(pre + "cross_attn.v", context)
            ca = _sdpa(cq.view(b, -1, n, d), ck.view(b, -1, n, d), cv.view(b, -1, n, d)).flatten(2)
            xs = xs + self._lin(pre + "cross_attn.o", ca)
            y = (frames_view(_layer_norm(xs, self.eps)) * (1 + mod[4]) + mod[3]).flatten(1, 2)
            y = self._lin(pre + "ffn.2", F.gelu(self._lin(pre + "ffn.0", y), approximate="tanh"))
            xs = xs + (frames_view(y) * mod[5]).flatten(1, 2)
        hm = (self.p["head.modulation"].unsqueeze(1) + e.unsqueeze(2)).chunk(2, dim=2)  # [B, F, 1, C]
        out = self._lin("head.head", (frames_view(_layer_norm(xs, self.eps)) * (1 + hm[1]) + hm[0]).flatten(1, 2))
        c = self.out_dim
        out = out.view(b, gf, gh, gw, pt, ph, pw, c)
        out = torch.einsum("bfhwpqrc->bcfphqwr", out).reshape(b, c, gf * pt, gh * ph, gw * pw)
        return out.permute(0, 2, 1, 3, 4)  # [B, F, C, H, W]


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Plain attention, ``[B, L, n, d]`` in and out."""
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


# ---------------------------------------------------------------------------------------------------------------
# Schedulers as the projects build them
# ---------------------------------------------------------------------------------------------------------------


class FlowMatchTable:
    """``utils/scheduler.py`` ``FlowMatchScheduler(shift, sigma_min=0, extra_one_step=True)`` after
    ``set_timesteps(1000, training=True)``: float32 sigmas and timesteps, looked up by nearest timestep."""

    def __init__(self, shift: float) -> None:
        sig = torch.linspace(1.0, 0.0, 1001)[:-1]
        self.sigmas = shift * sig / (1 + (shift - 1) * sig)
        self.timesteps = self.sigmas * 1000

    def warp(self, steps: Sequence[int]) -> torch.Tensor:
        """``warp_denoising_step``: ``cat(timesteps, [0])[1000 - steps]``."""
        return torch.cat([self.timesteps, torch.tensor([0.0])])[1000 - torch.tensor(steps)]

    def sigma(self, t: torch.Tensor | float) -> float:
        """``sigmas[argmin |timesteps - t|]`` (in double, as ``_convert_flow_pred_to_x0``)."""
        tt = torch.as_tensor(t, dtype=torch.float64)
        i = torch.argmin((self.timesteps.double() - tt).abs())
        return float(self.sigmas.double()[i])


# ---------------------------------------------------------------------------------------------------------------
# KV caches as the projects keep them
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class TokenCache:
    """One layer's cache: ``k``, ``v`` ``[B, size, n, d]`` and the two end indices (in tokens)."""

    k: torch.Tensor
    v: torch.Tensor
    global_end: int = 0
    local_end: int = 0
    pinned_start: int = -1
    pinned_len: int = 0


def _caches(layers: int, b: int, size: int, n: int, d: int) -> list[TokenCache]:
    return [TokenCache(torch.zeros(b, size, n, d), torch.zeros(b, size, n, d)) for _ in range(layers)]


def self_forcing_attend(caches: list[TokenCache], current_start: int, max_attention: int, local_attn: int,
                        sink_tokens: int):
    """Self-Forcing's ``CausalWanSelfAttention.forward`` (kv-cache branch, ``wan/modules/causal_model.py``): roll
    past the sink when a local window is set and the buffer is full, write the new keys after ``local_end``, attend
    to the last ``max_attention`` tokens; the indices move on after each layer."""

    def attend(layer: int, q, k, v):
        c = caches[layer]
        size, new = c.k.shape[1], q.shape[1]
        current_end = current_start + new
        if local_attn != -1 and current_end > c.global_end and new + c.local_end > size:
            evict = new + c.local_end - size
            rolled = c.local_end - evict - sink_tokens
            c.k[:, sink_tokens:sink_tokens + rolled] = c.k[:, sink_tokens + evict:sink_tokens + evict + rolled].clone()
            c.v[:, sink_tokens:sink_tokens + rolled] = c.v[:, sink_tokens + evict:sink_tokens + evict + rolled].clone()
            local_end = c.local_end + current_end - c.global_end - evict
        else:
            local_end = c.local_end + current_end - c.global_end
        c.k[:, local_end - new:local_end] = k
        c.v[:, local_end - new:local_end] = v
        lo = max(0, local_end - max_attention)
        out = _sdpa(q, c.k[:, lo:local_end], c.v[:, lo:local_end])
        c.global_end, c.local_end = current_end, local_end
        return out

    return attend


def causvid_attend(caches: list[TokenCache], current_start: int):
    """CausVid's ``CausalWanSelfAttention.forward`` (kv branch, ``causvid/models/wan/causal_model.py``): keys at
    their absolute token slots ``[current_start, current_end)``, attention to everything up to ``current_end``."""

    def attend(layer: int, q, k, v):
        c = caches[layer]
        end = current_start + q.shape[1]
        c.k[:, current_start:end] = k
        c.v[:, current_start:end] = v
        return _sdpa(q, c.k[:, :end], c.v[:, :end])

    return attend


def longlive1_attend(caches: list[TokenCache], current_start: int, sink_tokens: int, max_attention: int,
                     local_attn: int):
    """LongLive 1.0's ``CausalWanSelfAttention.forward`` (kv branch, branch v1.0 ``wan/modules/causal_model.py``):
    Self-Forcing's roll on a temporary copy, except that a *recompute* (``current_end <= global_end`` and
    ``current_start > 0``: the re-cache after a prompt switch) never writes into the sink; attention sees the sink
    plus the last ``max_attention - sink`` tokens. Updates are applied after the layer's attention."""

    def attend(layer: int, q, k, v):
        c = caches[layer]
        size, new = c.k.shape[1], q.shape[1]
        current_end = current_start + new
        recompute = current_end <= c.global_end and current_start > 0
        tk, tv = c.k.clone(), c.v.clone()
        if local_attn != -1 and current_end > c.global_end and new + c.local_end > size:
            evict = new + c.local_end - size
            rolled = c.local_end - evict - sink_tokens
            tk[:, sink_tokens:sink_tokens + rolled] = tk[:, sink_tokens + evict:sink_tokens + evict + rolled].clone()
            tv[:, sink_tokens:sink_tokens + rolled] = tv[:, sink_tokens + evict:sink_tokens + evict + rolled].clone()
            local_end = c.local_end + current_end - c.global_end - evict
        else:
            local_end = c.local_end + current_end - c.global_end
        local_start = local_end - new
        write = max(local_start, sink_tokens) if recompute else local_start
        off = write - local_start
        if local_end > write:
            tk[:, write:local_end] = k[:, off:]
            tv[:, write:local_end] = v[:, off:]
        if sink_tokens > 0:
            budget = max_attention - sink_tokens
            lo = max(sink_tokens, local_end - budget)
            keys = torch.cat([tk[:, :sink_tokens], tk[:, lo:local_end]], dim=1) if budget > 0 else tk[:, :sink_tokens]
            vals = torch.cat([tv[:, :sink_tokens], tv[:, lo:local_end]], dim=1) if budget > 0 else tv[:, :sink_tokens]
        else:
            lo = max(0, local_end - max_attention)
            keys, vals = tk[:, lo:local_end], tv[:, lo:local_end]
        out = _sdpa(q, keys, vals)
        c.k, c.v, c.global_end, c.local_end = tk, tv, current_end, local_end
        return out

    return attend


def longlive2_attend(caches: list[TokenCache], current_start: int, sink_tokens: int, global_sink_tokens: int,
                     max_attention: int):
    """LongLive 2.0's ``CausalWanSelfAttention.forward`` (kv branch, ``wan_5b/modules/causal_model.py``): the
    protected prefix is the global sink, plus a pinned shot sink once it sits right after it; a pinned region
    elsewhere ("floating") follows the roll; attention sees the window, with the protected parts prepended when they
    fall out of it. ``_apply_cache_updates`` writes the roll, the new keys and the pinned shift after the layer."""

    def attend(layer: int, q, k, v):
        c = caches[layer]
        size, new = c.k.shape[1], q.shape[1]
        current_end = current_start + new
        pinned = c.pinned_start >= 0 and c.pinned_len > 0
        if pinned and c.pinned_start == global_sink_tokens:
            protected = global_sink_tokens + c.pinned_len
        elif pinned:
            protected = global_sink_tokens
        else:
            protected = max(global_sink_tokens, sink_tokens)
        tk, tv = c.k.clone(), c.v.clone()
        shift = 0
        if current_end > c.global_end and new + c.local_end > size:
            evict = new + c.local_end - size
            rolled = c.local_end - evict - protected
            local_end = c.local_end + current_end - c.global_end - evict
            tk[:, protected:protected + rolled] = tk[:, protected + evict:protected + evict + rolled].clone()
            tv[:, protected:protected + rolled] = tv[:, protected + evict:protected + evict + rolled].clone()
            shift = evict if pinned and c.pinned_start >= protected else 0
        else:
            local_end = c.local_end + current_end - c.global_end
        tk[:, local_end - new:local_end] = k
        tv[:, local_end - new:local_end] = v
        window_start = max(0, local_end - max_attention)
        pre_sink = protected > 0 and window_start > 0
        pre_pin = pinned and c.pinned_start >= protected and c.pinned_start < window_start
        ps, pl = c.pinned_start, c.pinned_len
        if pre_sink and pre_pin:
            lo = max(protected, local_end - (max_attention - protected - pl))
            parts = [(0, protected), (ps, ps + pl), (lo, local_end)]
        elif pre_sink:
            lo = max(protected, local_end - (max_attention - protected))
            parts = [(0, protected), (lo, local_end)]
        elif pre_pin:
            lo = max(0, local_end - (max_attention - pl))
            parts = [(ps, ps + pl), (lo, local_end)]
        else:
            parts = [(window_start, local_end)]
        keys = torch.cat([tk[:, a:b] for a, b in parts], dim=1)
        vals = torch.cat([tv[:, a:b] for a, b in parts], dim=1)
        out = _sdpa(q, keys, vals)
        c.k, c.v, c.global_end, c.local_end = tk, tv, current_end, local_end
        c.pinned_start -= shift
        return out

    return attend


# ---------------------------------------------------------------------------------------------------------------
# The loops
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """The video's latent shape and token count per frame."""

    batch: int
    channels: int
    height: int
    width: int
    tokens_per_frame: int


def _few_step_block(fwd: WanForward, noise: Noise, block: int, steps: torch.Tensor, table: FlowMatchTable,
                    context: torch.Tensor, start_frame: float, attend_for: Callable[[], Callable]) -> torch.Tensor:
    """The DMD students' block loop (Self-Forcing ``pipeline/causal_inference.py`` step 3.1, CausVid's and
    LongLive 1.0's copies): predict x0 at each step, re-noise it to the next step with fresh noise."""
    x = noise(block, 0)
    b, f = x.shape[:2]
    for i, t in enumerate(steps):
        ts = torch.ones(b, f) * t  # an int64 ones times a float step: float32 (an int step stays integral)
        flow = fwd(x, ts, context, start_frame, attend_for())
        x0 = (x.double() - table.sigma(t) * flow.double()).float()
        if i < len(steps) - 1:
            s = table.sigma(steps[i + 1])
            x = (1 - s) * x0 + s * noise(block, i + 1)
        else:
            x = x0
    return x


def self_forcing_loop(model, contexts: Sequence[torch.Tensor], noise: Noise, grid: Grid) -> torch.Tensor:
    """Self-Forcing ``CausalInferencePipeline.inference`` with ``configs/self_forcing_dmd.yaml``: 3-frame blocks,
    steps [1000, 750, 500, 250] warped at shift 5, a 32760-token cache and global attention (``local_attn_size`` -1),
    the clean pass at ``context_noise`` 0. ``contexts``: one prompt per block (Self-Forcing itself has one)."""
    fwd, table = WanForward(model), FlowMatchTable(5.0)
    steps, block_frames, tpf = table.warp([1000, 750, 500, 250]), 3, grid.tokens_per_frame
    caches = _caches(fwd.layers, grid.batch, 32760, fwd.heads, fwd.head_dim)
    out = []
    for blk, ctx in enumerate(contexts):
        emb, start = fwd.embed_text(ctx), blk * block_frames

        def attend():
            return self_forcing_attend(caches, start * tpf, 32760, -1, 0)

        x0 = _few_step_block(fwd, noise, blk, steps, table, emb, start, attend)
        fwd(x0, torch.zeros(x0.shape[:2]), emb, start, attend())
        out.append(x0)
    return torch.cat(out, dim=1)


def causvid_loop(model, contexts: Sequence[torch.Tensor], noise: Noise, grid: Grid) -> torch.Tensor:
    """CausVid ``InferencePipeline.inference`` (``causvid/models/wan/causal_inference.py``) with
    ``configs/wan_causal_dmd.yaml``: 3-frame blocks, steps [1000, 757, 522] fed as they are (no warp) with σ from the
    shift-8 table, keys at absolute slots of a 32760-token cache, the clean pass at t = 0."""
    fwd, table = WanForward(model), FlowMatchTable(8.0)
    steps, block_frames, tpf = torch.tensor([1000, 757, 522]), 3, grid.tokens_per_frame
    caches = _caches(fwd.layers, grid.batch, 32760, fwd.heads, fwd.head_dim)
    out = []
    for blk, ctx in enumerate(contexts):
        emb, start = fwd.embed_text(ctx), blk * block_frames

        def attend():
            return causvid_attend(caches, start * tpf)

        x0 = _few_step_block(fwd, noise, blk, steps, table, emb, start, attend)
        fwd(x0, torch.zeros(x0.shape[:2]), emb, start, attend())
        out.append(x0)
    return torch.cat(out, dim=1)


def longlive1_loop(model, contexts: Sequence[torch.Tensor], noise: Noise, grid: Grid) -> torch.Tensor:
    """LongLive 1.0 ``InteractiveCausalInferencePipeline.inference`` (branch v1.0,
    ``pipeline/interactive_causal_inference.py``) with ``configs/longlive_interactive_inference.yaml``: 3-frame
    blocks, local attention 12 frames, sink 3, steps [1000, 750, 500, 250] warped at shift 5, ``global_sink`` true.
    A block whose prompt differs from the previous one is a switch: ``_recache_after_switch`` re-encodes the last
    ``min(12, frames)`` frames under the new prompt in one forward at t = 0 before the block."""
    fwd, table = WanForward(model), FlowMatchTable(5.0)
    steps, block_frames, tpf = table.warp([1000, 750, 500, 250]), 3, grid.tokens_per_frame
    local, sink = 12, 3
    caches = _caches(fwd.layers, grid.batch, local * tpf, fwd.heads, fwd.head_dim)
    out: list[torch.Tensor] = []
    for blk, ctx in enumerate(contexts):
        emb, start = fwd.embed_text(ctx), blk * block_frames
        if blk and ctx is not contexts[blk - 1] and start:
            n_re = min(local, start)
            re_start = start - n_re
            frames = torch.cat(out, dim=1)[:, re_start:start]
            fwd(frames, torch.zeros(frames.shape[:2]), emb, re_start,
                longlive1_attend(caches, re_start * tpf, sink * tpf, local * tpf, local))

        def attend():
            return longlive1_attend(caches, start * tpf, sink * tpf, local * tpf, local)

        x0 = _few_step_block(fwd, noise, blk, steps, table, emb, start, attend)
        fwd(x0, torch.zeros(x0.shape[:2]), emb, start, attend())
        out.append(x0)
    return torch.cat(out, dim=1)


def _wan_unipc(steps: int, shift: float):
    """LongLive 2.0's ``_initialize_sample_scheduler``: Wan's ``FlowUniPCMultistepScheduler(shift=1)`` then
    ``set_timesteps(steps, shift=shift)``, i.e. diffusers' flow UniPC (order 2, bh2, lower order final) over
    ``linspace(sigma_max, 0, steps + 1)[:-1]`` shifted; the DiT is fed ``int64(sigma * 1000)``."""
    import diffusers

    sched = diffusers.UniPCMultistepScheduler(
        num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift,
        solver_order=2, solver_type="bh2", predict_x0=True, lower_order_final=True, final_sigmas_type="zero")
    sigma_max = float(np.float32(1.0 - 1.0 / 1000))  # the float32 ``sigmas[0]`` of Wan's __init__
    base = np.linspace(sigma_max, 0.0, steps + 1)[:-1]
    sched.set_timesteps(sigmas=base)
    sched.set_begin_index(0)
    shifted = shift * base / (1 + (shift - 1) * base)
    fed = (shifted * 1000).astype(np.int64)
    return sched, [float(t) for t in fed]


def longlive2_loop(model, contexts: Sequence[torch.Tensor], new_shot: Sequence[bool], noise: Noise, grid: Grid,
                   first_frame: torch.Tensor | None = None) -> torch.Tensor:
    """LongLive 2.0 ``CausalDiffusionInferencePipeline._inference_inner`` (``pipeline/causal_diffusion_inference.py``)
    with ``configs/inference.yaml`` (``inference_i2v.yaml`` with ``first_frame``): 8-frame blocks, local attention
    32 frames, sink 8 and a global sink of 8 (``multi_shot_sink``), 4 UniPC steps at shift 5 per block from the
    block's noise, the clean pass at t = 0. ``new_shot[i]``: block i's prompt starts with the scene-cut prefix
    (``_is_shot_boundary``; never block 0): RoPE moves by 8 frames per shot (``multi_shot_rope_offset``) and the
    block is pinned as the shot sink after its clean pass (``_pin_current_chunk``). Image-to-video: the image
    latent ``[B, 1, C, H, W]`` replaces frame 0 of block 0 before every step and after the last, at timestep 0."""
    fwd = WanForward(model)
    block_frames, tpf, local, sink, phi = 8, grid.tokens_per_frame, 32, 8, 8
    caches = _caches(fwd.layers, grid.batch, local * tpf, fwd.heads, fwd.head_dim)
    out: list[torch.Tensor] = []
    shot = 0
    for blk, ctx in enumerate(contexts):
        emb, start = fwd.embed_text(ctx), blk * block_frames
        if blk and new_shot[blk]:
            shot += 1
        offset = shot * phi

        def attend():
            return longlive2_attend(caches, start * tpf, sink * tpf, sink * tpf, local * tpf)

        sched, fed = _wan_unipc(4, 5.0)
        latents = noise(blk, 0)
        clamp = first_frame is not None and blk == 0

        def hold(x):
            return torch.cat([first_frame.to(x.dtype), x[:, 1:]], dim=1) if clamp else x

        for i, t_step in enumerate(sched.timesteps):
            ts = torch.full(latents.shape[:2], fed[i])
            if clamp:
                latents, ts = hold(latents), torch.cat([torch.zeros(ts.shape[0], 1), ts[:, 1:]], dim=1)
            flow = fwd(latents, ts, emb, start + offset, attend())
            latents = sched.step(flow, t_step, latents, return_dict=False)[0]
            latents = hold(latents)
        latents = hold(latents)
        out.append(latents)
        fwd(latents, torch.zeros(latents.shape[:2]), emb, start + offset, attend())
        if blk and new_shot[blk]:  # _is_scene_cut: multi_shot_sink and a sink
            for c in caches:
                c.pinned_start = c.local_end - block_frames * tpf
                c.pinned_len = min(sink * tpf, block_frames * tpf)
    return torch.cat(out, dim=1)


def _buffer_attend(caches: list[TokenCache], lo: int, hi: int):
    """Re-encode tokens ``[lo, hi)`` of a time-ordered buffer in place, attending to ``[0, hi)``."""

    def attend(layer: int, q, k, v):
        c = caches[layer]
        c.k[:, lo:hi], c.v[:, lo:hi] = k, v
        return _sdpa(q, c.k[:, :hi], c.v[:, :hi])

    return attend


def fashionchameleon_loop(model, contexts: Sequence[torch.Tensor], noise: Noise, grid: Grid,
                          reference: torch.Tensor, garment: torch.Tensor) -> torch.Tensor:
    """FashionChameleon's stream (paper section 3.3; ``docs/design.md``) in Self-Forcing's bookkeeping: the
    reference and garment (``[B, 1, C, H, W]`` each) are prefilled at t = 0 at RoPE frames 0 and 1, attending to each
    other; 3-frame blocks from frame 2; a 23-frame buffer whose first 5 frames (conditions + the first block) are
    kept while the rest rolls; steps [1000, 750, 500, 250] warped at shift 5 with the DiT fed
    ``(t as float32).long()`` (the authors' loop); a prompt change re-encodes the conditions and then every cached
    block in buffer (time) order at t = 0, each attending to what precedes it."""
    fwd = WanForward(model)
    tpf, block_frames, cache_frames, sink = grid.tokens_per_frame, 3, 23, 5
    sigma_steps = [1000 * (5.0 * s / (1 + 4.0 * s)) for s in (1.0, 0.75, 0.5, 0.25)]
    caches = _caches(fwd.layers, grid.batch, cache_frames * tpf, fwd.heads, fwd.head_dim)
    conds = torch.cat([reference, garment], dim=1)
    emb = fwd.embed_text(contexts[0])
    fwd(conds, torch.zeros(conds.shape[:2]), emb, 0, self_forcing_attend(caches, 0, cache_frames * tpf, cache_frames,
                                                                        sink * tpf))
    out: list[torch.Tensor] = []
    for blk, ctx in enumerate(contexts):
        start = 2 + blk * block_frames
        if blk and ctx is not contexts[blk - 1]:
            emb = fwd.embed_text(ctx)
            end = caches[0].local_end
            fwd(conds, torch.zeros(conds.shape[:2]), emb, 0, _buffer_attend(caches, 0, 2 * tpf))
            held = torch.cat(out, dim=1)
            for lo in range(2 * tpf, end, block_frames * tpf):
                # the buffer keeps frames in time order: which frame sits at ``lo`` follows from the roll
                first = start - (end - lo) // tpf
                if lo < sink * tpf:
                    first = 2
                frames = held[:, first - 2:first - 2 + block_frames]
                fwd(frames, torch.zeros(frames.shape[:2]), emb, first,
                    _buffer_attend(caches, lo, lo + block_frames * tpf))

        def attend():
            return self_forcing_attend(caches, start * tpf, cache_frames * tpf, cache_frames, sink * tpf)

        x = noise(blk, 0)
        for i, t in enumerate(sigma_steps):
            fed = float(torch.tensor(t, dtype=torch.float32).long())
            flow = fwd(x, torch.full(x.shape[:2], fed), emb, start, attend())
            x0 = x - (t / 1000) * flow
            if i < len(sigma_steps) - 1:
                s = sigma_steps[i + 1] / 1000
                x = (1 - s) * x0 + s * noise(blk, i + 1)
        fwd(x0, torch.zeros(x0.shape[:2]), emb, start, attend())
        out.append(x0)
    return torch.cat(out, dim=1)
