"""Layers of the Wan2.1 and Wan2.2 causal video VAEs, with the causal memory passed explicitly.

Architecture and numerics follow the official Wan VAEs (``wan/modules/vae2_1.py`` in Wan-Video/Wan2.1 and
``wan/modules/vae2_2.py`` in Wan-Video/Wan2.2) and ComfyUI's ``comfy/ldm/wan/vae.py`` / ``vae2_2.py``. Submodule
names *are* the released checkpoint keys (``encoder.downsamples.3.residual.2.weight``), which is why the containers
are ``nn.Sequential`` with parameter-free slots (SiLU, dropout) kept at their original indices.

Streaming model. The reference runs its encoder on the first frame and then on groups of 4 frames, and its decoder
on one latent frame at a time; every temporal convolution keeps the last frames of its input in a cache so the next
group sees the same history it would have seen in one long sequence. Here that cache is a :class:`StepCache`
handed to every ``forward``: a dict from the owning module's name to the frames it keeps, plus a ``first`` flag for
the very first step of a stream. A module reads its entry and writes the replacement in the same call, so the dict
after a step is exactly the state the next step needs, and nothing else is kept (two frames per causal conv).

Two places where the reference is *not* a plain causal convolution, reproduced here on purpose:

- ``Resample('upsample3d')`` skips its temporal convolution for the first latent frame (that frame becomes one
  pixel frame, not two) and starts the following frames from zero history (ComfyUI's ``"Rep"`` marker). We store
  two zero frames as its cache, which is numerically identical.
- ``Resample('downsample3d')`` passes the first group through unchanged and afterwards convolves
  ``[last frame of previous group, group]`` with stride 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import nn

#: Frames a kernel-3 causal convolution needs from the previous step (ComfyUI's CACHE_T).
CACHE_FRAMES = 2


@dataclass
class StepCache:
    """Causal memory for one encoder or decoder step, updated in place by the modules that own entries."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    """Module name -> the trailing frames that module needs next step, ``[B, C, t, H, W]``."""
    first: bool = True
    """True on the first step of a stream (first pixel frame / first latent frame)."""


_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch, "mkldnn_convolution")
"""Whether this build has oneDNN's convolution (``conv3d``'s fast path)."""


def conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           stride: tuple[int, int, int] = (1, 1, 1), padding: tuple[int, int, int] = (0, 0, 0),
           dilation: tuple[int, int, int] = (1, 1, 1), groups: int = 1) -> torch.Tensor:
    """``F.conv3d`` (zero padding given as numbers), with a batch of one in fp32 on a CPU computed by oneDNN.

    PyTorch's dispatcher sends an fp32 batch of one to its reference loop (``slow_conv3d``) and every larger batch,
    and every bf16 input, to oneDNN; a streaming decode or encode is a batch of one. For narrow convolutions the loop
    measured up to 10x slower than oneDNN on the same call (the world codec's whole decode 3.2x); for the released
    Wan VAEs' wide ones a few percent (``docs/benchmarks/vae.md``). Same arithmetic to float rounding, gradients
    included (``tests/test_vae.py``); any other input, and a build without oneDNN, takes ``F.conv3d``.
    """
    if (x.shape[0] == 1 and x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and _ONEDNN and torch.backends.mkldnn.enabled):
        return torch.mkldnn_convolution(x, weight, bias, padding, stride, dilation, groups)
    return F.conv3d(x, weight, bias, stride, padding, dilation, groups)


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` through :func:`conv3d` (same parameters and state-dict keys)."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor,
                      bias: torch.Tensor | None) -> torch.Tensor:  # nn.Conv3d's signature, names included
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super()._conv_forward(input, weight, bias)
        return conv3d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


def _triple(k: int | tuple[int, int, int]) -> tuple[int, int, int]:
    return (k, k, k) if isinstance(k, int) else tuple(k)  # type: ignore[return-value]


def _per_frame(fn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D module to every frame: ``[B, C, T, H, W] -> [B, C', T, H', W']``."""
    y = fn(rearrange(x, "b c t h w -> (b t) c h w"))  # [B*T, C', H', W']
    return rearrange(y, "(b t) c h w -> b c t h w", b=x.shape[0])


class CausalConv3d(Conv3d):
    """Conv3d that is causal in time and "same"-padded in space.

    Output frame ``t`` sees input frames ``t - kt + 1 .. t``. Frames before the start of the current step come from
    the cache (zeros at the start of a stream), so a sequence fed in pieces gives the result of feeding it whole.
    Kernel-1-in-time convolutions (shortcuts, ``conv1``/``conv2``) need no cache.
    """

    cache_key: str = ""

    def __init__(self, in_dim: int, out_dim: int, kernel: int | tuple[int, int, int]) -> None:
        kt, kh, kw = _triple(kernel)
        super().__init__(in_dim, out_dim, (kt, kh, kw), padding=(0, kh // 2, kw // 2))
        self.history = kt - 1

    def forward(self, x: torch.Tensor, cache: StepCache | None = None) -> torch.Tensor:  # type: ignore[override]
        """``[B, C_in, T, H, W] -> [B, C_out, T, H, W]``."""
        if self.history:
            if cache is None:
                raise ValueError(f"{self.cache_key or 'CausalConv3d'} needs a StepCache (temporal kernel > 1)")
            prev = cache.tensors.get(self.cache_key)
            if prev is None:
                prev = x.new_zeros(x.shape[0], x.shape[1], self.history, x.shape[3], x.shape[4])
            x = torch.cat([prev, x], dim=2)  # [B, C, history + T, H, W]
            # clone: a view would keep the whole concatenated step alive until the next step.
            cache.tensors[self.cache_key] = x[:, :, -self.history :].clone()
        return super().forward(x)


class RMSNorm(nn.Module):
    """L2-normalise over channels, times ``sqrt(C) * gamma`` (the Wan VAE's ``RMS_norm``, no bias)."""

    def __init__(self, dim: int, spatial_dims: int) -> None:
        super().__init__()
        self.scale = math.sqrt(dim)
        self.gamma = nn.Parameter(torch.ones(dim, *([1] * spatial_dims)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, ...] -> [B, C, ...]``."""
        # Half-precision norms of 1000+ channels lose bits; normalise in fp32 (no-op for fp32, as diffusers does).
        if x.dtype in (torch.float16, torch.bfloat16):
            y = _l2_normalize(x.float()).to(x.dtype)
        else:
            y = _l2_normalize(x)
        return y * self.scale * self.gamma.to(x.dtype)


def _l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """``F.normalize(x, dim=1)`` (eps 1e-12) as a sum of squares and a reciprocal square root: ``F.normalize``'s
    strided vector norm over the channels measured up to 8x slower on a CPU at a streaming step's shapes."""
    return x * x.square().sum(1, keepdim=True).clamp_min(1e-24).rsqrt()


class ResidualBlock(nn.Module):
    """norm-SiLU-conv3 twice, plus a 1x1x1 shortcut when the width changes."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            RMSNorm(in_dim, 3),
            nn.SiLU(),
            CausalConv3d(in_dim, out_dim, 3),
            RMSNorm(out_dim, 3),
            nn.SiLU(),
            nn.Identity(),  # the reference's Dropout slot; every released VAE uses dropout 0
            CausalConv3d(out_dim, out_dim, 3),
        )
        self.shortcut: nn.Module = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: StepCache) -> torch.Tensor:
        """``[B, C_in, T, H, W] -> [B, C_out, T, H, W]``."""
        r = self.residual
        h = r[2](r[1](r[0](x)), cache)  # [B, C_out, T, H, W]
        h = r[6](r[5](r[4](r[3](h))), cache)  # [B, C_out, T, H, W]
        return h + self.shortcut(x)


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame separately (so it is causal by construction)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, 2)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, cache: StepCache | None = None) -> torch.Tensor:
        """``[B, C, T, H, W] -> [B, C, T, H, W]``."""
        b, c, t, h, w = x.shape
        f = rearrange(x, "b c t h w -> (b t) c h w")
        qkv = rearrange(self.to_qkv(self.norm(f)), "n c h w -> n 1 (h w) c")  # one head
        q, k, v = qkv.chunk(3, dim=-1)  # each [BT, 1, HW, C]
        o = F.scaled_dot_product_attention(q, k, v)  # [BT, 1, HW, C]
        o = self.proj(rearrange(o, "n 1 (h w) c -> n c h w", h=h))  # [BT, C, H, W]
        return x + rearrange(o, "(b t) c h w -> b c t h w", b=b)


class _NearestUp2x(nn.Module):
    """Spatial 2x nearest upsampling of ``[N, C, H, W]`` (slot 0 of ``resample``; no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # nearest-exact, as the reference; identical to nearest at an integer factor of 2.
        return F.interpolate(x, scale_factor=2.0, mode="nearest-exact")


class Resample(nn.Module):
    """Spatial 2x up/down sampling, optionally with a 2x temporal one (the ``*3d`` modes).

    ``mode``: ``upsample2d``, ``upsample3d``, ``downsample2d`` or ``downsample3d``. ``up_out`` is the width after an
    upsampling conv (Wan2.1 halves it, Wan2.2 keeps it).
    """

    cache_key: str = ""

    def __init__(self, dim: int, mode: str, up_out: int | None = None) -> None:
        super().__init__()
        if mode not in ("upsample2d", "upsample3d", "downsample2d", "downsample3d"):
            raise ValueError(f"unknown Resample mode {mode!r}")
        self.mode = mode
        if mode.startswith("up"):
            self.resample = nn.Sequential(_NearestUp2x(), nn.Conv2d(dim, up_out or dim, 3, padding=1))
        else:
            # Pad right/bottom only, then a stride-2 valid conv: output pixel i covers input 2i..2i+2.
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        if mode == "upsample3d":
            # One conv produces both output frames of each input frame, as 2*C channels.
            self.time_conv: nn.Module = CausalConv3d(dim, dim * 2, (3, 1, 1))
        elif mode == "downsample3d":
            self.time_conv = Conv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x: torch.Tensor, cache: StepCache) -> torch.Tensor:
        """``[B, C, T, H, W] -> [B, C', T', 2H, 2W]`` (up) or ``[B, C, T', H/2, W/2]`` (down)."""
        if self.mode == "upsample3d":
            x = self._double_time(x, cache)  # [B, C, T or 2T, H, W]
        x = _per_frame(self.resample, x)
        if self.mode == "downsample3d":
            x = self._halve_time(x, cache)
        return x

    def _double_time(self, x: torch.Tensor, cache: StepCache) -> torch.Tensor:
        key = self.time_conv.cache_key
        if key not in cache.tensors:
            # First latent frame: the reference leaves it single (1 latent frame -> 1 pixel frame) and lets the
            # next frames start from zero history rather than from this frame.
            cache.tensors[key] = x.new_zeros(x.shape[0], x.shape[1], CACHE_FRAMES, x.shape[3], x.shape[4])
            return x
        y = self.time_conv(x, cache)  # [B, 2C, T, H, W]; channel half k is output frame 2t + k
        return rearrange(y, "b (k c) t h w -> b c (t k) h w", k=2)

    def _halve_time(self, x: torch.Tensor, cache: StepCache) -> torch.Tensor:
        prev = cache.tensors.get(self.cache_key)
        cache.tensors[self.cache_key] = x[:, :, -1:].clone()
        if prev is None:
            # First frame of the video: kept on its own (this is why T_lat = 1 + (T - 1) / 4).
            return x
        return self.time_conv(torch.cat([prev, x], dim=2))  # [B, C, (1 + T - 3) / 2 + 1 = T / 2, H, W]


# --- Wan2.2: patchify and the parameter-free residual shortcuts of its down/up stages -----------------------------


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """``[B, C, T, H, W] -> [B, C*p*p, T, H/p, W/p]``; channel ``c*p*p + dw*p + dh`` holds offset ``(dh, dw)``."""
    if p == 1:
        return x
    return rearrange(x, "b c t (h dh) (w dw) -> b (c dw dh) t h w", dh=p, dw=p)


def unpatchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``[B, C*p*p, T, h, w] -> [B, C, T, h*p, w*p]``."""
    if p == 1:
        return x
    return rearrange(x, "b (c dw dh) t h w -> b c t (h dh) (w dw)", dh=p, dw=p)


def space_time_to_channels(x: torch.Tensor, out_dim: int, ft: int, fs: int) -> torch.Tensor:
    """Wan2.2's ``AvgDown3D``: fold ``ft x fs x fs`` blocks into channels, then average groups of channels.

    ``[B, C, T, H, W] -> [B, out_dim, ceil(T / ft), H / fs, W / fs]``. Time is zero-padded at the front to a multiple
    of ``ft`` (so the lone first frame is averaged with a zero frame, as in the reference).
    """
    pad_t = (-x.shape[2]) % ft
    if pad_t:
        x = F.pad(x, (0, 0, 0, 0, pad_t, 0))
    x = rearrange(x, "b c (t ft) (h fh) (w fw) -> b (c ft fh fw) t h w", ft=ft, fh=fs, fw=fs)
    return reduce(x, "b (o g) t h w -> b o t h w", "mean", o=out_dim)


def channels_to_space_time(x: torch.Tensor, out_dim: int, ft: int, fs: int, first: bool) -> torch.Tensor:
    """Wan2.2's ``DupUp3D``: repeat channels, then unfold them into ``ft x fs x fs`` blocks.

    ``[B, C, T, H, W] -> [B, out_dim, T*ft, H*fs, W*fs]``; on the first latent frame the first ``ft - 1`` frames are
    dropped, matching the main path's single first frame.
    """
    x = x.repeat_interleave(out_dim * ft * fs * fs // x.shape[1], dim=1)
    x = rearrange(x, "b (o ft fh fw) t h w -> b o (t ft) (h fh) (w fw)", o=out_dim, ft=ft, fh=fs, fw=fs)
    return x[:, :, ft - 1 :] if first else x


class DownStage(nn.Module):
    """Wan2.2 encoder stage: residual blocks (+ resample) plus an averaging shortcut over the same resampling."""

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, temporal: bool, spatial: bool) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.ft, self.fs = (2 if temporal else 1), (2 if spatial else 1)
        if (in_dim * self.ft * self.fs * self.fs) % out_dim:
            raise ValueError(
                f"Wan2.2 down stage {in_dim}->{out_dim} with factors t{self.ft} s{self.fs}: in*factor must be "
                "divisible by out; choose dim_mult so each stage at most doubles the width"
            )
        blocks: list[nn.Module] = []
        for _ in range(num_res_blocks):
            blocks.append(ResidualBlock(in_dim, out_dim))
            in_dim = out_dim
        if spatial:
            blocks.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d"))
        self.downsamples = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor, cache: StepCache) -> torch.Tensor:
        """``[B, C_in, T, H, W] -> [B, C_out, T', H', W']``."""
        shortcut = space_time_to_channels(x, self.out_dim, self.ft, self.fs)
        for block in self.downsamples:
            x = block(x, cache)
        return x + shortcut


class UpStage(nn.Module):
    """Wan2.2 decoder stage: residual blocks (+ resample) plus a duplicating shortcut when it upsamples."""

    def __init__(self, in_dim: int, out_dim: int, num_blocks: int, temporal: bool, spatial: bool) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.ft = 2 if temporal else 1
        self.spatial = spatial
        if spatial and (out_dim * self.ft * 4) % in_dim:
            raise ValueError(
                f"Wan2.2 up stage {in_dim}->{out_dim}: out*factor must be divisible by in; choose dim_mult so each "
                "stage at most halves the width"
            )
        blocks: list[nn.Module] = []
        for _ in range(num_blocks):
            blocks.append(ResidualBlock(in_dim, out_dim))
            in_dim = out_dim
        if spatial:
            blocks.append(Resample(out_dim, "upsample3d" if temporal else "upsample2d", up_out=out_dim))
        self.upsamples = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor, cache: StepCache) -> torch.Tensor:
        """``[B, C_in, T, H, W] -> [B, C_out, T', H', W']``."""
        y = x
        for block in self.upsamples:
            y = block(y, cache)
        if not self.spatial:  # the last stage has no shortcut in the reference
            return y
        return y + channels_to_space_time(x, self.out_dim, self.ft, 2, first=cache.first)


# --- encoder, decoder, full model ----------------------------------------------------------------------------------


def _run(seq: nn.Sequential, x: torch.Tensor, cache: StepCache) -> torch.Tensor:
    """Run a checkpoint-shaped Sequential, handing the cache to the layers that keep causal memory."""
    for layer in seq:
        x = layer(x, cache) if isinstance(layer, _TAKES_CACHE) else layer(x)
    return x


_TAKES_CACHE = (CausalConv3d, ResidualBlock, AttentionBlock, Resample, DownStage, UpStage)


class Encoder3d(nn.Module):
    """Pixels (patchified for Wan2.2) -> ``2 * z_dim`` channels (mean and log-variance) at 1/stride resolution."""

    def __init__(
        self,
        in_channels: int,
        dim: int,
        out_channels: int,
        dim_mult: tuple[int, ...],
        num_res_blocks: int,
        temporal_downsample: tuple[bool, ...],
        residual_stages: bool,
    ) -> None:
        super().__init__()
        dims = [dim * m for m in (1, *dim_mult)]
        last = len(dim_mult) - 1
        # 1. stem
        self.conv1 = CausalConv3d(in_channels, dims[0], 3)
        # 2. stages: residual blocks, then (except the last stage) a 2x spatial (and maybe temporal) downsample
        stages: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            temporal = i < last and temporal_downsample[i]
            if residual_stages:
                stages.append(DownStage(d_in, d_out, num_res_blocks, temporal, spatial=i < last))
                continue
            for _ in range(num_res_blocks):
                stages.append(ResidualBlock(d_in, d_out))
                d_in = d_out
            if i < last:
                stages.append(Resample(d_out, "downsample3d" if temporal else "downsample2d"))
        self.downsamples = nn.Sequential(*stages)
        # 3. middle: res, attention, res at the lowest resolution
        self.middle = nn.Sequential(ResidualBlock(dims[-1], dims[-1]), AttentionBlock(dims[-1]),
                                    ResidualBlock(dims[-1], dims[-1]))  # fmt: skip
        # 4. head
        self.head = nn.Sequential(RMSNorm(dims[-1], 3), nn.SiLU(), CausalConv3d(dims[-1], out_channels, 3))

    def forward(self, x: torch.Tensor, cache: StepCache) -> torch.Tensor:
        """``[B, C_in, T, H, W] -> [B, 2z, T', H / 2^stages, W / 2^stages]`` (T' = 1 on the first step, else T/4)."""
        x = self.conv1(x, cache)
        x = _run(self.downsamples, x, cache)
        x = _run(self.middle, x, cache)
        return _run(self.head, x, cache)


class Decoder3d(nn.Module):
    """``z_dim`` latent channels -> pixels (patchified for Wan2.2), one latent frame per step."""

    def __init__(
        self,
        dim: int,
        z_dim: int,
        out_channels: int,
        dim_mult: tuple[int, ...],
        num_res_blocks: int,
        temporal_upsample: tuple[bool, ...],
        residual_stages: bool,
    ) -> None:
        super().__init__()
        dims = [dim * m for m in (dim_mult[-1], *reversed(dim_mult))]
        last = len(dim_mult) - 1
        # 1. stem and middle at the latent resolution
        self.conv1 = CausalConv3d(z_dim, dims[0], 3)
        self.middle = nn.Sequential(ResidualBlock(dims[0], dims[0]), AttentionBlock(dims[0]),
                                    ResidualBlock(dims[0], dims[0]))  # fmt: skip
        # 2. stages: num_res_blocks + 1 residual blocks, then (except the last stage) a 2x upsample
        stages: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            temporal = i < last and temporal_upsample[i]
            if residual_stages:
                stages.append(UpStage(d_in, d_out, num_res_blocks + 1, temporal, spatial=i < last))
                continue
            if i > 0:
                d_in //= 2  # Wan2.1's upsampling conv halves the width
            for _ in range(num_res_blocks + 1):
                stages.append(ResidualBlock(d_in, d_out))
                d_in = d_out
            if i < last:
                stages.append(Resample(d_out, "upsample3d" if temporal else "upsample2d", up_out=d_out // 2))
        self.upsamples = nn.Sequential(*stages)
        # 3. head
        self.head = nn.Sequential(RMSNorm(dims[-1], 3), nn.SiLU(), CausalConv3d(dims[-1], out_channels, 3))

    def forward(self, x: torch.Tensor, cache: StepCache) -> torch.Tensor:
        """``[B, z, 1, h, w] -> [B, C_out, 1 (first step) or 4, h * 2^stages, w * 2^stages]``."""
        x = self.conv1(x, cache)
        x = _run(self.middle, x, cache)
        x = _run(self.upsamples, x, cache)
        return _run(self.head, x, cache)


class WanVAEModel(nn.Module):
    """The Wan VAE as a module tree whose ``state_dict`` is the released checkpoint layout.

    Built from a :class:`chameleon_core.vae.VAEConfig`-like set of fields; the streaming loop lives in
    :class:`chameleon_core.vae.WanVAE`. ``encode_step`` / ``decode_step`` run one causal step.
    """

    def __init__(
        self,
        *,
        dim: int,
        decoder_dim: int,
        z_dim: int,
        dim_mult: tuple[int, ...],
        num_res_blocks: int,
        temporal_downsample: tuple[bool, ...],
        patch_size: int,
        residual_stages: bool,
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.patch_size = patch_size
        pixel_channels = 3 * patch_size * patch_size
        # 1. encoder to mean + log-variance, 2. the 1x1x1 "quant" convs, 3. decoder
        self.encoder = Encoder3d(pixel_channels, dim, 2 * z_dim, dim_mult, num_res_blocks, temporal_downsample,
                                 residual_stages)  # fmt: skip
        self.conv1 = CausalConv3d(2 * z_dim, 2 * z_dim, 1)
        self.conv2 = CausalConv3d(z_dim, z_dim, 1)
        self.decoder = Decoder3d(decoder_dim, z_dim, pixel_channels, dim_mult, num_res_blocks,
                                 tuple(reversed(temporal_downsample)), residual_stages)  # fmt: skip
        for name, module in self.named_modules():
            if isinstance(module, (CausalConv3d, Resample)):
                module.cache_key = name

    def encode_step(self, video: torch.Tensor, cache: StepCache) -> torch.Tensor:
        """One encoder step: ``[B, 3, 1 or 4, H, W]`` pixels -> mean ``[B, z, 1, H/s, W/s]`` (raw latents)."""
        h = self.encoder(patchify(video, self.patch_size), cache)  # [B, 2z, 1, h, w]
        # Only the mean half of conv1 is needed (the log-variance is discarded, as ComfyUI does).
        z = self.z_dim
        return conv3d(h, self.conv1.weight[:z], self.conv1.bias[:z] if self.conv1.bias is not None else None)

    def decode_step(self, latent: torch.Tensor, cache: StepCache) -> torch.Tensor:
        """One decoder step: ``[B, z, 1, h, w]`` -> ``[B, 3, 1 (first) or 4, H, W]`` pixels (unclamped)."""
        x = self.decoder(self.conv2(latent), cache)
        return unpatchify(x, self.patch_size)
