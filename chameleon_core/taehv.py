"""A streaming tiny video decoder: the TAEHV architecture for Wan latents (``taew2_1``: Wan2.1, 16 channels;
``taew2_2``: Wan2.2, 48 channels), for the live path where the full Wan VAE decode costs as much as the DiT.

Written from the published structure of TAEHV (madebyollin/taehv, ``taehv.py``); the module tree below *is* the
released files' key layout (``decoder.<i>.…``), so ``taew2_1`` / ``taew2_2`` ``.safetensors`` / ``.pth`` files from
ComfyUI's ``models/vae_approx`` load with exact key checks. Only the decoder is built; the files' ``encoder.*``
tensors are recognised and skipped.

Decoder, per frame (2D convolutions on each frame; time only through memory blocks and temporal growth)::

    Clamp (3 tanh(x/3)) -> conv3x3 -> ReLU
    3 x MemBlock(w0) -> Upsample x2 -> TGrow(w0, 1) -> conv3x3(w0 -> w1)
    3 x MemBlock(w1) -> Upsample x2 -> TGrow(w1, 2) -> conv3x3(w1 -> w2)
    3 x MemBlock(w2) -> Upsample x2 -> TGrow(w2, 2) -> conv3x3(w2 -> w3)
    ReLU -> conv3x3(w3 -> 3 * patch^2) -> pixel shuffle(patch) -> clamp(0, 1)

widths (w0..w3) = (256, 128, 64, 64); patch 1 (Wan2.1: 8x spatial from three upsamplings) or 2 (Wan2.2: 16x).

- A MemBlock sees its input frame and the *previous* frame's input (zeros before the first frame):
  ``ReLU(conv(cat[x_t, x_{t-1}]) + skip(x_t))``. Streaming carries one frame per MemBlock: that is the whole state.
- TGrow(n, s) maps each frame to ``s`` frames with a 1x1 conv to ``s * n`` channels (sub-frame j takes channels
  ``j*n .. (j+1)*n``). Two stages of 2 give 4 pixel frames per latent frame.
- Frame count: the decoder makes ``4 T`` frames from ``T`` latent frames and drops the stream's first 3
  (``frames_to_trim``), so a stream gives ``1 + 4 (T - 1)`` frames, the same as the causal Wan VAE: the first chunk
  of 3 latent frames decodes to 9 frames and every later chunk to 12, exactly as :meth:`WanVAE.decode_chunk
  <chameleon_core.vae.WanVAE.decode_chunk>` counts them.
- Latent scaling: TAEHV was trained on the *normalised* latents the DiT works in (the TAEW demos give the pipeline
  ``latents_mean = 0``, ``latents_std = 1`` so it hands the model's latents straight over). :meth:`TinyVideoDecoder.
  decode_chunk` takes raw VAE latents like every :class:`~chameleon_core.decoding.ChunkDecoderVAE` and normalises
  them; :class:`~chameleon_core.decoding.StreamingDecoder` skips the raw round trip (``latent_space = "model"``).
- Released files may store the first TGrow (which runs without temporal growth) with twice its output channels;
  the reference keeps the last ``n`` (the last sub-frame's channels), and so does the loader.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints.errors import CheckpointError, check_device
from .checkpoints.tensors import FiniteCheck
from .checkpoints.weight_files import read_weight_file
from .latents import LatentFamily, latent_family

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TAEHVConfig:
    """Decoder shape. Presets in :data:`TAEHV_PRESETS`; :func:`infer_taehv_config` reads it from a file's shapes."""

    latent_channels: int
    """16 (Wan2.1 latents) or 48 (Wan2.2)."""
    patch_size: int
    """Output pixel-shuffle factor: 1 (Wan2.1, 8x spatial) or 2 (Wan2.2, 16x)."""
    widths: tuple[int, int, int, int] = (256, 128, 64, 64)
    """Channels of the three stages and the last conv's input (the released decoders' ``n_f``)."""
    time_upscale: tuple[int, int, int] = (1, 2, 2)
    """Temporal growth per stage (the TGrow strides)."""

    @property
    def family(self) -> LatentFamily:
        return latent_family(self.latent_channels)

    @property
    def t_upscale(self) -> int:
        """Pixel frames per latent frame."""
        n = 1
        for s in self.time_upscale:
            n *= s
        return n

    @property
    def frames_to_trim(self) -> int:
        """Frames dropped at the start of a stream (so T latent frames give ``1 + 4 (T - 1)``)."""
        return self.t_upscale - 1

    @property
    def spatial_stride(self) -> int:
        return 8 * self.patch_size


TAEHV_PRESETS: dict[str, TAEHVConfig] = {
    "taew2_1": TAEHVConfig(latent_channels=16, patch_size=1),
    "taew2_2": TAEHVConfig(latent_channels=48, patch_size=2),
}


# ---------------------------------------------------------------------------------------------------------------
# Modules (names are the checkpoint keys)
# ---------------------------------------------------------------------------------------------------------------


def _conv(n_in: int, n_out: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, bias=bias)


class Clamp(nn.Module):
    """Soft clamp of the input latents to about +-3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class MemBlock(nn.Module):
    """Residual block over (this frame, previous frame): ``ReLU(conv(cat[x, past]) + x)``."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(2 * n, n), nn.ReLU(), _conv(n, n), nn.ReLU(), _conv(n, n))
        self.skip = nn.Identity()  # in == out in every decoder MemBlock: no skip weights in the files

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        """x, past: ``[N, C, H, W]`` (frames flattened into N) -> ``[N, C, H, W]``."""
        return F.relu(self.conv(torch.cat([x, past], 1)) + self.skip(x))


class TGrow(nn.Module):
    """Temporal growth: each frame becomes ``stride`` frames (1x1 conv to ``stride * n`` channels, then split)."""

    def __init__(self, n: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n, n * stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B*T, C, H, W]`` -> ``[B*T*stride, C, H, W]`` (sub-frames of one frame adjacent, in time order)."""
        n, c, h, w = x.shape
        return self.conv(x).reshape(n * self.stride, c, h, w)


class TinyVideoDecoder(nn.Module):
    """TAEHV decoder with streaming decode: :meth:`decode_chunk` follows :class:`~chameleon_core.decoding.
    ChunkDecoderVAE`, so :class:`~chameleon_core.decoding.StreamingDecoder` and the session loop take it as is."""

    latent_space = "model"
    """:class:`~chameleon_core.decoding.StreamingDecoder` may hand model-space latents to :meth:`decode_model_space`
    directly (what TAEHV was trained on), skipping the raw round trip."""

    def __init__(self, config: TAEHVConfig) -> None:
        super().__init__()
        self.config = config
        w0, w1, w2, w3 = config.widths
        s0, s1, s2 = config.time_upscale
        self.decoder = nn.Sequential(
            Clamp(), _conv(config.latent_channels, w0), nn.ReLU(),
            MemBlock(w0), MemBlock(w0), MemBlock(w0), nn.Upsample(scale_factor=2), TGrow(w0, s0), _conv(w0, w1, False),
            MemBlock(w1), MemBlock(w1), MemBlock(w1), nn.Upsample(scale_factor=2), TGrow(w1, s1), _conv(w1, w2, False),
            MemBlock(w2), MemBlock(w2), MemBlock(w2), nn.Upsample(scale_factor=2), TGrow(w2, s2), _conv(w2, w3, False),
            nn.ReLU(), _conv(w3, 3 * config.patch_size**2),
        )  # fmt: skip
        self._memblocks = tuple(i for i, m in enumerate(self.decoder) if isinstance(m, MemBlock))

    @property
    def device(self) -> torch.device:
        return self.decoder[1].weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder[1].weight.dtype

    @property
    def family(self) -> LatentFamily:
        return self.config.family

    # -- decoding ---------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def decode_model_space(self, latents: torch.Tensor, state: TAEHVState | None = None, *, clamp: bool = True,
                           consume: bool = False) -> tuple[torch.Tensor, TAEHVState]:
        """Model-space (normalised) latents ``[B, C, n, h, w]`` -> pixels ``[B, 3, F, H, W]`` in [-1, 1] and the new
        state. ``F = 1 + 4 (n - 1)`` for the stream's first chunk, ``4 n`` later; the chunks' pixels concatenated
        equal one whole decode. ``consume`` is accepted for the interface: the state is one frame per MemBlock and
        the old one is never modified, so there is nothing to release early."""
        cfg = self.config
        if latents.ndim != 5 or latents.shape[1] != cfg.latent_channels:
            raise ValueError(
                f"the tiny decoder ({cfg.family.name}) takes latents [B, {cfg.latent_channels}, n, h, w], got shape "
                f"{tuple(latents.shape)}; use the taew file that matches the model's VAE family"
            )
        b, _, n, h, w = latents.shape
        if state is not None and (state.batch, state.size) != (b, (h, w)):
            raise ValueError(
                f"this chunk {tuple(latents.shape)} does not continue the stream the state was made for "
                f"(batch {state.batch}, latent size {state.size}); start a new state"
            )
        memory = list(state.memory) if state is not None else [None] * len(self.decoder)
        x = latents.to(self.device, self.dtype).transpose(1, 2).reshape(b * n, -1, h, w)  # [B*n, C, h, w]
        for i, block in enumerate(self.decoder):
            if isinstance(block, MemBlock):
                frames = x.shape[0] // b
                xt = x.view(b, frames, *x.shape[1:])  # [B, T, C, H, W]
                prev = memory[i].to(xt.device) if memory[i] is not None else torch.zeros_like(xt[:, 0])
                past = torch.cat([prev[:, None], xt[:, :-1]], dim=1).reshape(x.shape)  # the previous frame's input
                memory[i] = xt[:, -1].clone()
                x = block(x, past)
            else:
                x = block(x)
        if cfg.patch_size > 1:
            x = F.pixel_shuffle(x, cfg.patch_size)
        frames = x.shape[0] // b
        pixels = x.view(b, frames, *x.shape[1:]).transpose(1, 2)  # [B, 3, F, H, W]
        done = state.frames_out if state is not None else 0
        trim = max(0, cfg.frames_to_trim - done)
        pixels = pixels[:, :, trim:]
        if clamp:
            pixels = pixels.clamp(0, 1)
        pixels = pixels * 2 - 1
        new = TAEHVState(tuple(memory), (state.latent_frames if state else 0) + n, done + frames, b, (h, w))
        return pixels.contiguous(), new

    def decode_chunk(self, latents: torch.Tensor, state: TAEHVState | None = None, *, clamp: bool = True,
                     consume: bool = False) -> tuple[torch.Tensor, TAEHVState]:
        """Raw VAE latents ``[B, C, n, h, w]`` (the :class:`~chameleon_core.decoding.ChunkDecoderVAE` interface) ->
        pixels and state; see :meth:`decode_model_space`."""
        return self.decode_model_space(self.family.to_model_space(latents.float()), state, clamp=clamp,
                                       consume=consume)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """A whole video of raw latents -> pixels ``[B, 3, 1 + 4 (T - 1), H, W]`` in [-1, 1]."""
        return self.decode_chunk(latents)[0]


@dataclass(frozen=True)
class TAEHVState:
    """What a stream's decode carries between chunks: the last input frame of every MemBlock."""

    memory: tuple[torch.Tensor | None, ...]
    latent_frames: int
    frames_out: int
    """Decoder frames produced so far, before the start trim."""
    batch: int
    size: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return sum(m.numel() * m.element_size() for m in self.memory if m is not None)

    def to(self, device: torch.device | str) -> TAEHVState:
        """A new state with the memory on ``device`` (bit-exact); this one is left as it is."""
        return replace(self, memory=tuple(None if m is None else m.to(device) for m in self.memory))


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------

_TGROW_STAGES = (7, 13, 19)  # decoder indices of the three TGrow modules


TAEHV_GET = ("use taew2_2.safetensors (Wan2.2) or taew2_1.safetensors (Wan2.1) from madebyollin/taehv; ComfyUI keeps "
             "them in models/vae_approx/")
"""Where to get a tiny decoder file, for error messages."""


def infer_taehv_config(shapes: Mapping[str, tuple[int, ...]], source: str = "the state dict") -> TAEHVConfig:
    """The decoder config from a file's tensor shapes (latent channels, patch, widths); raises
    :class:`~chameleon_core.checkpoints.CheckpointError` (a ValueError) naming ``source`` for another layout."""
    need = ("decoder.1.weight", "decoder.8.weight", "decoder.14.weight", "decoder.20.weight", "decoder.22.weight")
    missing = [k for k in need if k not in shapes]
    if missing:
        first = sorted(shapes)[:8]
        hint = " (a TAEHV 'super' decoder, which is not supported: use taew2_1 / taew2_2)" if (
            "decoder.0.weight" in shapes) else ""
        raise CheckpointError(
            f"{source} is not a TAEHV decoder{hint}: missing {missing}; first keys: {first}. Use taew2_1 or taew2_2 "
            "(.safetensors or .pth) from madebyollin/taehv, in ComfyUI's models/vae_approx"
        )
    w0, c = shapes["decoder.1.weight"][:2]
    w1 = shapes["decoder.8.weight"][0]
    w2 = shapes["decoder.14.weight"][0]
    w3 = shapes["decoder.20.weight"][0]
    out = shapes["decoder.22.weight"][0]
    patch = {3: 1, 12: 2}.get(out)
    if patch is None or c not in (16, 48):
        raise CheckpointError(
            f"the TAEHV decoder {source} decodes {c} latent channels to {out} output channels; only Wan decoders are "
            "supported (taew2_1: 16 -> 3, taew2_2: 48 -> 12)"
        )
    return TAEHVConfig(latent_channels=c, patch_size=patch, widths=(w0, w1, w2, w3))


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` or ``.pth`` file's tensors, through the checkpoint package's reader
    (:func:`~chameleon_core.checkpoints.weight_files.read_weight_file`: regular files only, ``.pth`` weights-only,
    every failure a :class:`~chameleon_core.checkpoints.CheckpointError` naming the file)."""
    return read_weight_file(path, what="tiny decoder file", get=TAEHV_GET, finite=False)


def taehv_from_state_dict(sd: Mapping[str, torch.Tensor], *, device: torch.device | str = "cpu",
                          dtype: torch.dtype = torch.float32, source: str = "the state dict") -> TinyVideoDecoder:
    """Build the decoder for ``sd``'s shapes and load it with exact key checks (missing and unexpected keys are named;
    ``encoder.*`` tensors are skipped); NaN/inf weights are refused. Errors are
    :class:`~chameleon_core.checkpoints.CheckpointError` (a ValueError) naming ``source``."""
    dec = {k: v for k, v in sd.items() if not k.startswith("encoder.")}
    config = infer_taehv_config({k: tuple(v.shape) for k, v in dec.items()}, source)
    with torch.device("meta"):
        model = TinyVideoDecoder(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(dec))
    unexpected = sorted(set(dec) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"TAEHV decoder keys of {source} do not match the taew layout: missing {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}, unexpected {unexpected[:10]}"
            f"{' ...' if len(unexpected) > 10 else ''}; {TAEHV_GET}"
        )
    tensors = {}
    finite = FiniteCheck()
    for k, shape in expected.items():
        v = dec[k]
        stage = k.split(".")[1]
        if k.endswith("conv.weight") and int(stage) in _TGROW_STAGES and v.shape != shape and (
                v.shape[1:] == shape[1:] and v.shape[0] % shape[0] == 0):
            v = v[-shape[0]:]  # stored with temporal growth; this stage runs without: keep the last sub-frame's
        if tuple(v.shape) != shape:
            raise CheckpointError(f"{source}: TAEHV tensor {k}: expected shape {list(shape)}, got {list(v.shape)}; "
                                  f"{TAEHV_GET}")
        finite.add(k, v)
        tensors[k] = v.to(dtype)
    finite.check(f"the tiny decoder {source}")  # NaN weights would decode every frame black
    model = TinyVideoDecoder(config)
    model.load_state_dict(tensors, strict=True, assign=False)
    n_enc = len(sd) - len(dec)
    logger.info("tiny decoder %s (widths %s)%s", config.family.name, config.widths,
                f", {n_enc} encoder tensors skipped" if n_enc else "")
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_taehv(path: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
               ) -> TinyVideoDecoder:
    """Load a released ``taew2_1`` / ``taew2_2`` file (or any file in that layout). Every failure -- a missing,
    non-regular, truncated, empty or foreign file, a pickle holding code, another layout, NaN/inf weights, a device
    this machine lacks -- raises :class:`~chameleon_core.checkpoints.CheckpointError` naming the file and the fix."""
    dev = check_device(device, f"the tiny decoder {path}")
    return taehv_from_state_dict(read_tensors(path), device=dev, dtype=dtype, source=str(path))


def random_taehv(config: TAEHVConfig, seed: int = 0, *, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> TinyVideoDecoder:
    """A seeded random-weight decoder (tests and benchmarks; weights scaled so activations stay O(1))."""
    g = torch.Generator().manual_seed(seed)
    model = TinyVideoDecoder(config)
    with torch.no_grad():
        for p in model.parameters():
            std = (2.0 / p[0].numel()) ** 0.5 * 0.7 if p.ndim > 1 else 0.02
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
