"""The one streaming-decode entry point: latent chunks in, pixel frames out, with the VAE's causal state carried.

The session loop, the decode node, the benchmarks and reference disentangle all decode through
:class:`StreamingDecoder`, so a stream's pixels are the same wherever they are made: chunk after chunk, across
segments and switches, the frames equal one whole-video decode (the causal VAE carries two frames of each temporal
convolution's input; ``tests/test_vae.py`` checks the equality), while memory stays at one chunk.

Any VAE with the core's streaming interface plugs in (:class:`ChunkDecoderVAE`): the core's :class:`~chameleon_core.
vae.WanVAE`, the node pack's wrapper over ComfyUI's VAE weights, or the tiny TAEHV decoder
(:class:`~chameleon_core.taehv.TinyVideoDecoder`, the live path's cheap decoder; it makes the same frame counts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch

from .latents import LatentFamily


class ChunkDecoderVAE(Protocol):
    """What streaming decode needs from a VAE."""

    device: torch.device
    dtype: torch.dtype

    def decode_chunk(self, latents: torch.Tensor, state: Any = None, *, clamp: bool = True, consume: bool = False
                     ) -> tuple[torch.Tensor, Any]:
        """Raw latents ``[B, C, n, h, w]`` and the previous state -> pixels ``[B, 3, F, H, W]`` in [-1, 1], state."""
        ...


class StreamingDecoder:
    """Decodes one continuous video chunk by chunk; remembers the last pixel frame (for reference disentangle).

    ``family`` given: :meth:`decode` takes model-space latents (what the stream produces) and converts them to raw
    VAE latents first; None: it takes raw latents (ComfyUI LATENT ``samples``).
    """

    def __init__(self, vae: ChunkDecoderVAE, family: LatentFamily | None = None) -> None:
        self.vae = vae
        self.family = family
        self._state: Any = None
        self.latent_frames = 0
        """Latent frames decoded so far."""
        self.video_frames = 0
        """Pixel frames produced so far."""
        self.last_frame: torch.Tensor | None = None
        """The newest pixel frame ``[B, 3, H, W]`` in [-1, 1], as the continuous video shows it."""
        self._shared = False
        """The causal state is shared with a fork: the next decode must not release it."""

    def fork(self) -> StreamingDecoder:
        """A decoder that continues this video from here, independently of this one: both can go on (e.g. two
        branches of a stream after the same chunk). The causal state is shared until each one's next decode, which
        leaves it intact (copy-on-continue), so forking costs nothing."""
        other = StreamingDecoder(self.vae, self.family)
        other._state, other.latent_frames, other.video_frames = self._state, self.latent_frames, self.video_frames
        other.last_frame = self.last_frame
        self._shared = other._shared = self._state is not None
        return other

    def catch_up(self, latents: torch.Tensor, chunk_frames: int, *,
                 should_stop: Callable[[], bool] | None = None) -> Iterator[torch.Tensor]:
        """Decode what this decoder has not decoded yet of ``latents`` (the video's latents from its first frame,
        ``[B, C, T, h, w]``), ``chunk_frames`` at a time; yields each chunk's pixels. The one loop that decodes a
        stream so far: a fresh decoder decodes a whole video, a forked one only the frames since its fork.

        Stops (without raising) between chunks once ``should_stop()`` returns True.
        """
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        if latents.shape[2] < self.latent_frames:
            raise ValueError(f"the decoder has decoded {self.latent_frames} latent frames, but the video has only "
                             f"{latents.shape[2]}; decode it with a decoder of this video (or a fresh one)")
        for start in range(self.latent_frames, latents.shape[2], chunk_frames):
            if should_stop is not None and should_stop():
                return
            yield self.decode(latents[:, :, start : start + chunk_frames])

    def warm_up(self, latents: torch.Tensor, chunk_frames: int) -> StreamingDecoder:
        """:meth:`catch_up` with the pixels dropped: afterwards the decoder continues the video after ``latents``,
        and :attr:`last_frame` is its last frame. Returns the decoder."""
        for _ in self.catch_up(latents, chunk_frames):
            pass
        return self

    @property
    def state_nbytes(self) -> int:
        """Memory held by the carried causal state, in bytes."""
        return getattr(self._state, "nbytes", 0) if self._state is not None else 0

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The next latent frames ``[B, C, n, h, w]`` -> their pixels ``[B, 3, F, H, W]`` in [-1, 1] (VAE device)."""
        # consume: the old state's caches are released during the call (memory stays at one chunk), unless a fork
        # shares them
        consume, self._shared = not self._shared, False
        if self.family is not None and getattr(self.vae, "latent_space", "raw") == "model":
            # A decoder trained on the DiT's normalised latents (the tiny decoder): no raw round trip.
            pixels, self._state = self.vae.decode_model_space(latents, self._state, consume=consume)
        else:
            raw = self.family.to_raw(latents.float()) if self.family is not None else latents
            raw = raw.to(self.vae.device, self.vae.dtype)
            pixels, self._state = self.vae.decode_chunk(raw, self._state, consume=consume)
        self.latent_frames += latents.shape[2]
        self.video_frames += pixels.shape[2]
        self.last_frame = pixels[:, :, -1]
        return pixels


def decode_chunks(
    vae: ChunkDecoderVAE,
    latents: torch.Tensor,
    chunk_frames: int,
    *,
    family: LatentFamily | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[torch.Tensor]:
    """Decode a whole latent video ``[B, C, T, h, w]`` ``chunk_frames`` at a time; yields each chunk's pixels.

    Stops (without raising) between chunks once ``should_stop()`` returns True.
    """
    return StreamingDecoder(vae, family).catch_up(latents, chunk_frames, should_stop=should_stop)
