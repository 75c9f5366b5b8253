"""The Wan2.1 / Wan2.2 video VAE: whole-video and chunk-by-chunk (streaming) encode and decode.

Follows the official Wan VAEs (Wan-Video/Wan2.1 ``wan/modules/vae2_1.py``, Wan-Video/Wan2.2 ``wan/modules/vae2_2.py``)
and ComfyUI's ``comfy/ldm/wan/vae.py`` / ``vae2_2.py``; the layers live in :mod:`chameleon_core.vae_modules`.

Conventions:

- ``video`` is ``[B, 3, T, H, W]`` in [-1, 1]. ``T = 1 + 4k``: the causal VAE keeps the first frame on its own.
- latents are ``[B, C, T_lat, h, w]`` **raw**, as ComfyUI's VAE returns them (the encoder mean, not a sample, and
  not normalised). ``T_lat = (T - 1) // 4 + 1``. Converting to the DiT's space is done only by
  :mod:`chameleon_core.latents`; :attr:`WanVAE.family` gives the :class:`~chameleon_core.latents.LatentFamily`.
- Streaming. :meth:`WanVAE.decode_chunk` decodes a few latent frames and returns a new
  :class:`VAEStreamState` holding the causal-convolution caches (two frames per convolution), so the next chunk
  continues the same video without a seam; decoding in chunks gives exactly the pixels of decoding whole. The
  decoder runs one latent frame per step, as the reference does, so memory is that of one latent frame.
  :meth:`WanVAE.encode_chunk` does the same for encoding (first piece ``1 + 4k`` frames, later pieces ``4k``).
  By default a call never changes the state it is given, so a state can be continued twice (ComfyUI reuses cached
  node outputs by reference). The caches are large at high resolution (about 3 GiB in bf16 for Wan2.2 at
  1280x704, as in the reference), so a loop that does not need the old state passes ``consume=True``: the old
  state's caches are then released while the chunk runs instead of living alongside the new ones.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import torch

from .latents import FAMILIES, LatentFamily
from .vae_modules import StepCache, WanVAEModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VAEConfig:
    """Shape of a Wan VAE. Two VAEs with equal configs have identical ``state_dict`` layouts."""

    family: str = "wan2.2"
    """``wan2.1`` (plain stages, RGB in) or ``wan2.2`` (2x2 patchified RGB in, residual stages with shortcuts)."""
    dim: int = 160
    """Encoder base width; stage ``i`` has ``dim * dim_mult[i]`` channels (96 for Wan2.1, 160 for Wan2.2)."""
    decoder_dim: int = 256
    """Decoder base width (equal to ``dim`` in Wan2.1; 256 in Wan2.2)."""
    z_dim: int = 48
    """Latent channels (16 for Wan2.1, 48 for Wan2.2)."""
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    """Width multipliers per stage; every stage but the last halves height and width."""
    num_res_blocks: int = 2
    """Residual blocks per encoder stage (the decoder has one more per stage)."""
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    """Per downsampling stage, whether it also halves time (the decoder mirrors it)."""

    def __post_init__(self) -> None:
        if self.family not in ("wan2.1", "wan2.2"):
            raise ValueError(f"VAE family must be 'wan2.1' or 'wan2.2', got {self.family!r}")
        if min(self.dim, self.decoder_dim, self.z_dim, self.num_res_blocks) < 1 or not self.dim_mult:
            raise ValueError(f"VAE widths, z_dim, num_res_blocks and dim_mult must be positive, got {self}")
        if len(self.temporal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(
                f"temporal_downsample needs one entry per downsampling stage ({len(self.dim_mult) - 1} for "
                f"dim_mult={self.dim_mult}), got {self.temporal_downsample}"
            )
        if self.family == "wan2.1" and any(self.decoder_dim * m % 2 for m in self.dim_mult[1:]):
            raise ValueError(f"Wan2.1 upsampling halves the width: decoder_dim * dim_mult must be even, got {self}")

    @property
    def patch_size(self) -> int:
        """Pixels folded into channels before the encoder (2x2 for Wan2.2)."""
        return 2 if self.family == "wan2.2" else 1

    @property
    def spatial_stride(self) -> int:
        """Pixels per latent cell along height and width (8 for Wan2.1, 16 for Wan2.2)."""
        return 2 ** (len(self.dim_mult) - 1) * self.patch_size

    @property
    def temporal_stride(self) -> int:
        """Pixel frames per latent frame after the first (4 for both released VAEs)."""
        return 2 ** sum(self.temporal_downsample)

    def build(self) -> WanVAEModel:
        """The module tree, on the current default device (use ``torch.device('meta')`` for no memory)."""
        return WanVAEModel(
            dim=self.dim,
            decoder_dim=self.decoder_dim,
            z_dim=self.z_dim,
            dim_mult=tuple(self.dim_mult),
            num_res_blocks=self.num_res_blocks,
            temporal_downsample=tuple(self.temporal_downsample),
            patch_size=self.patch_size,
            residual_stages=self.family == "wan2.2",
        )


VAE_PRESETS: dict[str, VAEConfig] = {
    "wan2.1": VAEConfig("wan2.1", dim=96, decoder_dim=96, z_dim=16),
    "wan2.2": VAEConfig("wan2.2", dim=160, decoder_dim=256, z_dim=48),
    # Tests and CPU benchmarks: real latent channels and strides, widths of 8-16, one residual block per stage.
    "wan2.1-tiny": VAEConfig("wan2.1", dim=8, decoder_dim=8, z_dim=16, dim_mult=(1, 2, 2, 2), num_res_blocks=1),
    "wan2.2-tiny": VAEConfig("wan2.2", dim=8, decoder_dim=8, z_dim=48, dim_mult=(1, 2, 2, 2), num_res_blocks=1),
}


def vae_preset(name: str) -> VAEConfig:
    """Look up a VAE preset by name, with an error that lists the valid names."""
    try:
        return VAE_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown VAE preset {name!r}; choose one of {sorted(VAE_PRESETS)}") from None


@dataclass(frozen=True)
class VAEStreamState:
    """Causal memory between chunks of one video. Every call returns a new state and leaves the given one intact,
    unless it was passed with ``consume=True`` (then its caches are released and it cannot be continued again).

    Holds, per temporal convolution, the last frames of its input (two frames at most), so its size is a few
    frames of activations at each resolution, independent of how long the video already is.
    """

    direction: str
    """``encode`` or ``decode``: a state only continues the operation that made it."""
    latent_frames: int
    """Latent frames produced (encode) or consumed (decode) so far."""
    chunk_shape: tuple[int, int, int, int]
    """``(batch, channels, height, width)`` that later chunks must have."""
    _tensors: dict[str, torch.Tensor] = field(repr=False)
    """Module name -> cached frames ``[B, C, t, H, W]``; emptied only when the state is consumed."""

    @property
    def caches(self) -> Mapping[str, torch.Tensor]:
        """Module name -> cached frames ``[B, C, t, H, W]`` (read-only view)."""
        return MappingProxyType(self._tensors)

    @property
    def consumed(self) -> bool:
        """True once a ``*_chunk(..., consume=True)`` call has taken this state's caches."""
        return self.latent_frames > 0 and not self._tensors

    @property
    def nbytes(self) -> int:
        """Memory held by the caches, in bytes."""
        return sum(t.numel() * t.element_size() for t in self.caches.values())

    def to(self, device: torch.device | str) -> VAEStreamState:
        """A new state with the caches on ``device`` (bit-exact); this one is left as it is (a later
        ``consume`` of either releases only its own caches)."""
        return replace(self, _tensors={k: v.to(device) for k, v in self._tensors.items()})


class WanVAE:
    """A loaded Wan VAE: encode, decode, and their streaming forms. See the module docstring for conventions."""

    def __init__(self, model: WanVAEModel, config: VAEConfig, source: str | None = None) -> None:
        self.model = model.eval().requires_grad_(False)
        self.config = config
        self.source = source
        """The file the weights were loaded from (set by the loader), named in errors; None when unknown."""

    def __repr__(self) -> str:
        return f"WanVAE({self.config}, device={self.device}, dtype={self.dtype})"

    # --- properties ---------------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.model.conv2.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.conv2.weight.dtype

    @property
    def latent_channels(self) -> int:
        """Latent channels (16 or 48); same attribute name as ComfyUI's VAE, so checks work on both."""
        return self.config.z_dim

    @property
    def family(self) -> LatentFamily:
        """The latent space (statistics for raw <-> model-space conversion, preview factors)."""
        family = FAMILIES[self.config.family]
        geometry = self.geometry
        if (family.channels, family.spatial_stride, family.temporal_stride) != (
            geometry.channels,
            geometry.spatial_stride,
            geometry.temporal_stride,
        ):
            raise ValueError(
                f"this VAE has a custom latent space ({geometry.channels} channels, {geometry.spatial_stride}x "
                f"spatial, {geometry.temporal_stride}x temporal) but the {family.name} statistics are for "
                f"{family.channels} channels, {family.spatial_stride}x, {family.temporal_stride}x; only the released "
                "VAEs (or test configs with z_dim 16 / 48 and 4 stages) have a latent family"
            )
        return family

    @property
    def geometry(self) -> LatentFamily:
        """Size arithmetic (strides, channel count) of this VAE, also for custom configs."""
        cfg = self.config
        return replace(
            FAMILIES[cfg.family],
            channels=cfg.z_dim,
            spatial_stride=cfg.spatial_stride,
            temporal_stride=cfg.temporal_stride,
        )

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> WanVAE:
        """Move the weights (in place) and return self."""
        self.model.to(device=device, dtype=dtype)
        return self

    # --- encode -------------------------------------------------------------------------------------------------

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, 3, T, H, W]`` in [-1, 1], ``T = 1 + 4k`` -> raw latents ``[B, C, 1 + k, H/s, W/s]``."""
        return self.encode_chunk(video, None)[0]

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """One image ``[B, 3, H, W]`` in [-1, 1] -> a one-frame raw latent ``[B, C, 1, H/s, W/s]``.

        Equal to the first latent frame of any video that starts with this image (the VAE is causal).
        """
        if not isinstance(image, torch.Tensor) or image.ndim != 4:
            raise ValueError(
                f"encode_image expects an image tensor [B, 3, H, W] in [-1, 1], got "
                f"{_describe(image)}; for a video [B, 3, T, H, W] use encode()"
            )
        return self.encode(image.unsqueeze(2))

    def encode_chunk(
        self, video: torch.Tensor, state: VAEStreamState | None = None, *, consume: bool = False
    ) -> tuple[torch.Tensor, VAEStreamState]:
        """Encode the next piece of a video, carrying the causal state.

        Args:
            video: ``[B, 3, T, H, W]`` in [-1, 1]. The first piece (``state=None``) has ``T = 1 + 4k`` frames, later
                pieces ``T = 4k`` (k >= 1).
            state: what the previous call returned, or None to start a new video.
            consume: release ``state``'s caches during the call (it cannot be continued again); saves memory.
        Returns:
            raw latents ``[B, C, T_lat, h, w]`` (``1 + k`` for the first piece, ``k`` later) and the new state.
        """
        video = self._check_pixels(video)
        s = self.config.temporal_stride
        t = video.shape[2]
        if state is None:
            if t % s != 1 % s or t < 1:
                raise ValueError(
                    f"the first piece of a video must have 1 + {s}k frames (1, {1 + s}, {1 + 2 * s}, ...), got {t}; "
                    f"trim it to {max(1, t - (t - 1) % s)} frames or pad it to {t + (1 - t) % s}"
                )
            cache = StepCache({}, first=True)
            bounds = [(0, 1)] + [(i, i + s) for i in range(1, t, s)]
            done = 0
        else:
            self._check_state(state, "encode", video)
            if t == 0 or t % s:
                raise ValueError(
                    f"a piece after the first must have a multiple of {s} frames ({s}, {2 * s}, ...), got {t}; "
                    f"send {t - t % s or s} frames now and keep the rest for the next piece"
                )
            cache = StepCache(self._continue(state, consume), first=False)
            bounds = [(i, i + s) for i in range(0, t, s)]
            done = state.latent_frames
        outs = []
        with torch.no_grad():
            for a, b in bounds:
                outs.append(self.model.encode_step(video[:, :, a:b], cache))  # [B, C, 1, h, w]
                cache.first = False
        latents = torch.cat(outs, dim=2)
        self._check_finite(latents, "encoded latents", done, done + len(bounds))
        b, c, _, h, w = video.shape
        return latents, VAEStreamState("encode", done + len(bounds), (b, c, h, w), cache.tensors)

    # --- decode -------------------------------------------------------------------------------------------------

    def decode(self, latents: torch.Tensor, *, clamp: bool = True) -> torch.Tensor:
        """Raw latents ``[B, C, T_lat, h, w]`` -> video ``[B, 3, 4 (T_lat - 1) + 1, H, W]`` in [-1, 1].

        ``clamp=False`` returns the decoder's raw output (the reference clamps to [-1, 1]).
        """
        return self.decode_chunk(latents, None, clamp=clamp)[0]

    def decode_chunk(
        self,
        latents: torch.Tensor,
        state: VAEStreamState | None = None,
        *,
        clamp: bool = True,
        consume: bool = False,
    ) -> tuple[torch.Tensor, VAEStreamState]:
        """Decode the next latent frames of a video, carrying the causal state.

        Args:
            latents: raw latents ``[B, C, n, h, w]``, n >= 1 (the streaming sampler's chunk of 3, say).
            state: what the previous call returned, or None to start a new video.
            clamp: clamp the pixels to [-1, 1] as the reference does.
            consume: release ``state``'s caches during the call (it cannot be continued again); saves memory.
        Returns:
            pixels ``[B, 3, F, H, W]`` with ``F = 1 + 4 (n - 1)`` for the first chunk and ``4 n`` later, and the new
            state. Concatenating the chunks' pixels gives exactly :meth:`decode` of the concatenated latents.
        """
        z = self._check_latents(latents)
        s = self.config.temporal_stride
        b, c, n, h, w = z.shape
        if state is None:
            cache = StepCache({}, first=True)
            done = 0
        else:
            self._check_state(state, "decode", z)
            cache = StepCache(self._continue(state, consume), first=False)
            done = state.latent_frames
        stride = self.config.spatial_stride
        frames = n * s - (s - 1 if state is None else 0)
        # Preallocated, so the chunk's pixels exist once (no list of pieces plus a concatenated copy).
        out = torch.empty(b, 3, frames, h * stride, w * stride, device=self.device, dtype=self.dtype)
        at = 0
        with torch.no_grad():
            for i in range(n):
                piece = self.model.decode_step(z[:, :, i : i + 1], cache)  # [B, 3, 1 or 4, H, W]
                cache.first = False
                out[:, :, at : at + piece.shape[2]] = piece
                at += piece.shape[2]
                del piece
        self._check_finite(out, "decoded frames", done, done + n)
        if clamp:
            out.clamp_(-1.0, 1.0)
        return out, VAEStreamState("decode", done + n, (b, c, h, w), cache.tensors)

    # --- input checks -------------------------------------------------------------------------------------------

    def _check_finite(self, x: torch.Tensor, what: str, first: int, end: int) -> None:
        """Raise :class:`NonFiniteVAEError` if ``x`` holds NaN/inf: one host sync per chunk (none on ``meta``, where
        the shapes-only benchmark runs and there are no values)."""
        if x.device.type == "meta" or bool(torch.isfinite(x).all()):
            return
        where = f"the VAE loaded from {self.source}" if self.source else "the VAE (source file unknown)"
        raise NonFiniteVAEError(
            f"{what} of latent frames {first}..{end - 1} contain NaN/inf, produced by {where} ({self.config.family}, "
            f"{self.dtype}). A NaN would otherwise become black pixels. Likely causes: damaged VAE weights "
            "(re-download the file), fp16 overflow (load the VAE in bf16 or fp32), or NaN latents from the model"
        )

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """Latent (h, w) for a pixel size; raises a ValueError naming a usable size otherwise."""
        return self.geometry.latent_size(height, width)

    def _check_pixels(self, video: torch.Tensor) -> torch.Tensor:
        if not isinstance(video, torch.Tensor) or video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(
                f"expected a video tensor [B, 3, T, H, W] in [-1, 1], got {_describe(video)}; convert ComfyUI IMAGE "
                "batches [B, H, W, C] with nodes.adapters.values.image_to_video"
            )
        if not video.is_floating_point():
            raise TypeError(f"video must be a floating-point tensor in [-1, 1], got dtype {video.dtype}")
        self.geometry.latent_size(video.shape[3], video.shape[4])
        return video.to(device=self.device, dtype=self.dtype)

    def _check_latents(self, latents: torch.Tensor) -> torch.Tensor:
        z = self.config.z_dim
        if not isinstance(latents, torch.Tensor) or latents.ndim != 5 or latents.shape[1] != z:
            raise ValueError(
                f"expected raw {self.config.family} latents [B, {z}, T, h, w], got {_describe(latents)}; "
                f"a 4D tensor needs a frame axis (unsqueeze(2)), other channel counts need the matching VAE"
            )
        if min(latents.shape) < 1:
            raise ValueError(f"latents must be non-empty, got shape {tuple(latents.shape)}")
        if not latents.is_floating_point():
            raise TypeError(f"latents must be a floating-point tensor, got dtype {latents.dtype}")
        return latents.to(device=self.device, dtype=self.dtype)

    def _check_state(self, state: VAEStreamState, direction: str, chunk: torch.Tensor) -> None:
        if not isinstance(state, VAEStreamState):
            raise TypeError(f"state must be a VAEStreamState returned by {direction}_chunk or None, got {type(state)}")
        if state.consumed:
            raise ValueError(
                f"this state was consumed by an earlier {direction}_chunk(..., consume=True) call; continue from the "
                "state that call returned, or pass consume=False to keep states reusable"
            )
        if state.direction != direction:
            raise ValueError(
                f"this state came from {state.direction}_chunk and cannot continue {direction}_chunk; pass "
                f"state=None to start a new {direction} stream"
            )
        b, c, _, h, w = chunk.shape
        if state.chunk_shape != (b, c, h, w):
            raise ValueError(
                f"chunk (batch, channels, height, width) = {(b, c, h, w)} does not continue this stream, whose "
                f"chunks are {state.chunk_shape}; pass state=None to start a new video at the new size"
            )

    def _continue(self, state: VAEStreamState, consume: bool) -> dict[str, torch.Tensor]:
        """A private, mutable copy of the state's caches (on this VAE's device/dtype).

        The modules replace entries of the copy, never tensors in place, so the given state stays valid; with
        ``consume`` the state lets go of its entries, so each old tensor is freed as soon as it is replaced.
        """
        tensors = {k: v.to(device=self.device, dtype=self.dtype) for k, v in state._tensors.items()}
        if consume:
            state._tensors.clear()
        return tensors


class NonFiniteVAEError(FloatingPointError):
    """The VAE produced NaN/inf (decoded frames or encoded latents); the state passed in is unchanged."""


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)} ({x.dtype})"
    return f"{type(x).__name__}"


def check_vae_matches(vae: object, in_channels: int) -> None:
    """Raise a ValueError unless ``vae`` produces the ``in_channels`` latents a diffusion model takes.

    Works on :class:`WanVAE` and on anything with ``latent_channels`` (ComfyUI's VAE has it).
    """
    channels = getattr(vae, "latent_channels", None)
    if not isinstance(channels, int):
        raise TypeError(f"expected a VAE with an integer latent_channels (a WanVAE), got {type(vae).__name__}")
    if channels != in_channels:
        want = {16: "the Wan2.1 VAE (wan_2.1_vae.safetensors)", 48: "the Wan2.2 VAE (wan2.2_vae.safetensors)"}
        have = {16: "a Wan2.1 VAE", 48: "a Wan2.2 VAE"}.get(channels, "a custom VAE")
        raise ValueError(
            f"VAE and diffusion model do not match: the model takes {in_channels}-channel latents but the VAE "
            f"makes {channels}-channel latents ({have}); load "
            f"{want.get(in_channels, f'a VAE with {in_channels} latent channels')} with this model"
        )


# --- building (loading and saving: chameleon_core.checkpoints) --------------------------------------------------------


def build_vae(
    config: VAEConfig | str,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int | None = 0,
) -> WanVAE:
    """A VAE with random weights (PyTorch's default init), for tests and benchmarks. ``config`` may be a preset."""
    if isinstance(config, str):
        config = vae_preset(config)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        with torch.device(device):
            model = config.build()
    return WanVAE(model.to(dtype=dtype), config)


__all__ = [
    "VAE_PRESETS",
    "NonFiniteVAEError",
    "VAEConfig",
    "VAEStreamState",
    "WanVAE",
    "build_vae",
    "check_vae_matches",
    "vae_preset",
]
