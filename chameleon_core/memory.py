"""Memory bounds of a stream: estimate what a stream will allocate and refuse, before allocating, what cannot fit.

A stream's memory is dominated by sizes the user picks (cache frames, resolution, batch), and a wrong one
(``--cache-frames 1000000``: 15 GiB per cache copy) used to run until the kernel's OOM killer took the machine's
memory. :func:`estimate_stream_memory` adds up, from the config alone:

- the KV cache (:meth:`~chameleon_core.cache.CacheGeometry.nbytes`) times the copies alive at once: the state's own
  cache and the private copy an operation writes (copy-on-write), i.e. 2 while generating;
- the activations of one chunk through one block: hidden states and the feed-forward's inner width at the chunk's
  tokens, the keys / values spliced with the cache, and on the CPU (PyTorch's math attention with a mask) the
  attention scores ``heads x chunk tokens x cache tokens``;
- the streaming VAE decode: its causal caches (two frames per temporal convolution at every decoder resolution)
  plus one step's activations (four frames at the output resolution).

:func:`check_stream_memory` compares the total with the free memory of the device the cache lives on (CUDA:
``torch.cuda.mem_get_info`` plus what PyTorch's allocator holds unused; host: ``MemAvailable`` of
``/proc/meminfo``) and raises :class:`MemoryBudgetError` with the estimate, the free memory and the fix. It is
called by :func:`~chameleon_core.streaming.start_stream` (so the nodes are protected too) and by the command
line's plan, before any weights load. The estimate is an upper bound of the working set, not a promise: a
``margin`` of the free memory is left for the allocator's fragmentation and for whatever else runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .cache import CacheGeometry
from .config import StreamSettings, WanConfig

logger = logging.getLogger(__name__)

MAX_SIDE = 8192
"""Largest video width or height in pixels (Wan is trained at 704-1280; 8K is far past any sane stream)."""
MAX_BATCH = 64
"""Largest batch of streams run together."""
MAX_VIDEO_FRAMES = 10_000_000
"""Largest frame count of one command-line run (over 100 hours at 24 FPS)."""
COPIES_WHILE_GENERATING = 2
"""KV cache copies alive during generate / a switch: the input state's and the private copy (copy-on-write)."""
MARGIN = 0.9
"""Fraction of the free memory a stream may plan to use."""


class MemoryBudgetError(ValueError):
    """A stream would need more memory than the device has free; the message gives the estimate, the free memory
    and the fix (lower cache_frames, the resolution or the batch)."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a stream needs at its peak, by part."""

    cache_bytes: int
    """One KV cache."""
    cache_copies: int
    """Caches alive at once (2 while generating: copy-on-write)."""
    activation_bytes: int
    """One chunk's activations through a block (the peak inside a forward)."""
    vae_bytes: int
    """Streaming VAE decode: causal caches plus one step's activations (0 when not decoding here)."""
    weight_bytes: int = 0
    """Model weights still to be loaded (the command line plans before loading; 0 once they are loaded)."""

    @property
    def total(self) -> int:
        return self.cache_bytes * self.cache_copies + self.activation_bytes + self.vae_bytes + self.weight_bytes

    def describe(self) -> str:
        weights = f", weights {gib(self.weight_bytes)}" if self.weight_bytes else ""
        return (
            f"{gib(self.total)} (KV cache {gib(self.cache_bytes)} x {self.cache_copies} copies, activations "
            f"{gib(self.activation_bytes)}, VAE decode {gib(self.vae_bytes)}{weights})"
        )


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def vae_decode_bytes(vae_config: object | None, latent_h: int, latent_w: int, batch: int, dtype: torch.dtype) -> int:
    """Bytes of the streaming decode at a latent size: causal caches (two frames per temporal convolution at every
    decoder resolution) and one step's activations (four output frames at every stage). For Wan2.2 at 1280x704 the
    caches come to about 2.9 GB in bf16, matching the reference's ~3 GiB."""
    if vae_config is None:
        return 0
    es = _element_size(dtype)
    mult = tuple(vae_config.dim_mult)
    dims = [vae_config.decoder_dim * m for m in (mult[-1], *reversed(mult))]
    total = 0
    h, w = latent_h, latent_w
    for i, d in enumerate(dims[1:]):
        convs = 2 * (vae_config.num_res_blocks + 1) + 1  # residual blocks (2 convs each) + a resample / shortcut
        total += convs * 2 * d * h * w  # two cached frames per causal conv
        total += 2 * 4 * d * h * w  # one step: ~2 live tensors of 4 frames at this resolution
        if i < len(dims) - 2:
            h, w = h * 2, w * 2
    return batch * total * es


def estimate_stream_memory(
    config: WanConfig,
    settings: StreamSettings,
    tokens_per_frame: int,
    *,
    batch: int = 1,
    dtype: torch.dtype = torch.bfloat16,
    device: torch.device | str = "cpu",
    vae_config: object | None = None,
    latent_size: tuple[int, int] | None = None,
) -> MemoryEstimate:
    """The peak memory of a stream (see the module docstring), from sizes alone: nothing is allocated."""
    device = torch.device(device)
    es = _element_size(dtype)
    geometry = CacheGeometry(settings, tokens_per_frame)
    cache = geometry.nbytes(config, batch, dtype)
    q = batch * settings.chunk_frames * tokens_per_frame  # query tokens of one chunk
    k = batch * geometry.capacity_tokens + q  # keys: the cache plus the chunk itself
    act = q * (config.ffn_dim * 2 + config.dim * 8) * es  # FFN inner (+ GELU) and the block's hidden states
    act += 2 * k * config.dim * es  # keys / values spliced with the cache
    if device.type == "cpu":  # the math path materialises the scores (fp32 softmax)
        act += config.num_heads * q * (k // batch) * 4
    vae = 0
    if vae_config is not None and latent_size is not None:
        vae = vae_decode_bytes(vae_config, latent_size[0], latent_size[1], batch, dtype)
    return MemoryEstimate(cache, COPIES_WHILE_GENERATING, act, vae)


def free_memory(device: torch.device | str) -> int | None:
    """Bytes free for new tensors on ``device``: CUDA's free memory plus what PyTorch's allocator holds unused;
    on the host, ``MemAvailable`` from ``/proc/meminfo``. None when unknown (the check is then skipped)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        held = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + held)
    if device.type == "cpu":
        return host_available()
    return None


def host_available() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (Linux), else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_stream_memory(estimate: MemoryEstimate, device: torch.device | str, *, what: str = "this stream") -> None:
    """Raise :class:`MemoryBudgetError` if ``estimate`` does not fit in the free memory of ``device``."""
    device = torch.device(device)
    free = free_memory(device)
    if free is None:
        logger.debug("free memory of %s unknown; not checking the estimate %s", device, estimate.describe())
        return
    if estimate.total <= MARGIN * free:
        logger.debug("%s needs about %s of %s free on %s", what, estimate.describe(), gib(free), device)
        return
    raise MemoryBudgetError(
        f"{what} would need about {estimate.describe()} on {device}, but only {gib(free)} is free there "
        f"(at most {MARGIN:.0%} of it is planned); lower cache_frames (--cache-frames; 23 is the trained length), the "
        "resolution (--width/--height) or the batch, or free memory on the device"
    )


def check_stream_sizes(settings: StreamSettings, *, width: int | None = None, height: int | None = None,
                       batch: int = 1) -> None:
    """Sane upper bounds on the size inputs, checked before any estimate (a typo such as 70400 is no stream)."""
    if width is not None and height is not None and (width > MAX_SIDE or height > MAX_SIDE):
        raise MemoryBudgetError(
            f"video size {width}x{height} is larger than {MAX_SIDE} pixels a side; the model is trained at 704x1280: "
            "pass a width and height of at most a few thousand pixels"
        )
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
        raise MemoryBudgetError(f"batch must be a whole number in 1..{MAX_BATCH}, got {batch!r}; stream fewer at once")


__all__ = [
    "MAX_BATCH",
    "MAX_SIDE",
    "MAX_VIDEO_FRAMES",
    "MemoryBudgetError",
    "MemoryEstimate",
    "check_stream_memory",
    "check_stream_sizes",
    "estimate_stream_memory",
    "free_memory",
    "host_available",
    "vae_decode_bytes",
]
