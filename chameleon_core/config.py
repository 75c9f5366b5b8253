"""Architecture configuration of the Wan DiT family, with the released presets in one place.

Field names follow the official Wan ``WanModel`` constructor (see
``tests/data/checkpoint-layouts/*.transformer.json``). Everything that depends on resolution (tokens per latent
frame, cache length) is computed from the config and the latent family, never written as a literal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from .latents import LatentFamily, latent_family

COND_FRAMES = 2
"""Condition frames in front of the video: the reference and the garment (RoPE frames 0 and 1)."""

MAX_CACHE_FRAMES = 1024
"""Largest KV cache in latent frames (the student is trained with 23; the memory check bounds it further)."""
MAX_CHUNK_FRAMES = 64
"""Largest chunk in latent frames."""
MAX_STEPS = 1000
"""Most denoising steps per chunk (the timestep range of the schedule)."""

#: Every released Wan model uses 128-dimensional attention heads; the loader relies on this to infer ``num_heads``.
HEAD_DIM = 128


@dataclass(frozen=True)
class WanConfig:
    """Shape of a Wan DiT. Two models with equal configs have identical ``state_dict`` layouts."""

    dim: int = 3072
    """Hidden width of the transformer."""
    ffn_dim: int = 14336
    """Inner width of each block's feed-forward network."""
    num_heads: int = 24
    """Attention heads; ``dim / num_heads`` is the head dim (128 in every released Wan)."""
    num_layers: int = 30
    """Number of transformer blocks."""
    in_dim: int = 48
    """Latent channels in (16 for Wan2.1's VAE, 48 for Wan2.2's)."""
    out_dim: int = 48
    """Latent channels out (the flow-matching velocity)."""
    text_dim: int = 4096
    """Width of the text-encoder features (umT5-XXL: 4096)."""
    freq_dim: int = 256
    """Width of the sinusoidal timestep embedding."""
    text_len: int = 512
    """The prompt is zero-padded to this many tokens, as the reference does."""
    patch_size: tuple[int, int, int] = (1, 2, 2)
    """Patch size in (frames, height, width) of latent space."""
    eps: float = 1e-6
    """Epsilon of every LayerNorm / RMSNorm."""
    qk_norm: bool = True
    """RMSNorm on queries and keys (all released Wan models)."""
    cross_attn_norm: bool = True
    """Affine LayerNorm (``norm3``) before cross-attention (all released Wan models)."""
    rope_theta: float = 10000.0
    """Base of the 3-axis rotary position embedding."""
    name: str = field(default="custom", compare=False)
    """Preset name, or ``custom`` for shapes that match no preset (pruned, distilled, tiny)."""

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"dim must be divisible by num_heads, got dim={self.dim}, num_heads={self.num_heads}")
        if self.head_dim % 2 or self.head_dim < 6:
            raise ValueError(f"head dim must be even and >= 6 for 3-axis RoPE, got {self.head_dim}")
        if len(self.patch_size) != 3:
            raise ValueError(f"patch_size must have 3 entries (t, h, w), got {self.patch_size}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def latent(self) -> LatentFamily:
        """The VAE latent family this model consumes, from its input channels."""
        return latent_family(self.in_dim)

    def latent_grid(self, height: int, width: int) -> tuple[int, int]:
        """Latent (h, w) for a pixel resolution; raises a ValueError naming the fix for unusable sizes."""
        return self.latent.latent_size(height, width, patch=self.patch_size[1:])

    def tokens_per_frame(self, height: int, width: int) -> int:
        """Transformer tokens per latent frame at a pixel resolution (880 for Wan2.2 at 1280x704)."""
        lh, lw = self.latent_grid(height, width)
        return (lh // self.patch_size[1]) * (lw // self.patch_size[2])

    def tokens_per_latent_grid(self, lh: int, lw: int) -> int:
        """Transformer tokens per latent frame for a latent (h, w) grid."""
        if lh % self.patch_size[1] or lw % self.patch_size[2]:
            raise ValueError(
                f"latent height/width must be divisible by the patch size {self.patch_size[1:]}, got {lh}x{lw}; "
                "pick a pixel resolution that is a multiple of 32"
            )
        return (lh // self.patch_size[1]) * (lw // self.patch_size[2])

    def renamed(self, name: str) -> WanConfig:
        return replace(self, name=name)


PRESETS: dict[str, WanConfig] = {
    "wan2.1-t2v-1.3b": WanConfig(
        dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, in_dim=16, out_dim=16, name="wan2.1-t2v-1.3b"
    ),
    "wan2.1-t2v-14b": WanConfig(
        dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, in_dim=16, out_dim=16, name="wan2.1-t2v-14b"
    ),
    "wan2.2-ti2v-5b": WanConfig(
        dim=3072, ffn_dim=14336, num_heads=24, num_layers=30, in_dim=48, out_dim=48, name="wan2.2-ti2v-5b"
    ),
    # Tests and CPU benchmarks: two blocks of two 128-wide heads, Wan2.2 latents (48 channels).
    "tiny": WanConfig(
        dim=256, ffn_dim=512, num_heads=2, num_layers=2, in_dim=48, out_dim=48, text_dim=64, text_len=16, name="tiny"
    ),
    # The same with Wan2.1 latents (16 channels): the Wan2.1 students' profiles at test size.
    "tiny-wan2.1": WanConfig(
        dim=256, ffn_dim=512, num_heads=2, num_layers=2, in_dim=16, out_dim=16, text_dim=64, text_len=16,
        name="tiny-wan2.1"
    ),
}


def preset(name: str) -> WanConfig:
    """Look up a preset by name, with an error that lists the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def match_preset(config: WanConfig) -> WanConfig:
    """Return ``config`` renamed to the preset it equals in shape (ignoring text_len), or as ``custom``."""
    for name, p in PRESETS.items():
        if replace(p, text_len=config.text_len) == config:
            return config.renamed(name)
    return config.renamed("custom")


SAMPLERS = ("renoise", "unipc")
"""How a chunk is denoised: ``renoise`` (predict x0, re-noise it to the next step with fresh noise: FashionChameleon,
Self-Forcing, CausVid, LongLive 1.0) or ``unipc`` (Wan's flow UniPC over the chunk's steps: LongLive 2.0)."""
TIMESTEP_INPUTS = ("rounded", "exact")
"""What the DiT is fed for a step's timestep: ``rounded`` (rounded to the compute dtype, then truncated, as
FashionChameleon's loop builds it) or ``exact`` (the float as is, as the Self-Forcing family feeds it)."""
PROMPT_RECACHE = ("chunks", "window", "none")
"""What a prompt switch does to the cached frames: ``chunks`` (re-encode conditions and every cached chunk under the
new prompt, chunk by chunk in time order), ``window`` (LongLive 1.0: the cached frames re-encoded in one forward that
sees all of them; the sink keeps its keys once the stream has outgrown the cache), ``none`` (only the prompt
changes: LongLive 2.0's per-chunk prompts)."""


@dataclass(frozen=True)
class StreamSettings:
    """How a stream runs: chunking, cache length and the few-step schedule (FashionChameleon's defaults).

    The one place where these settings are defined: the command line, the benchmark, the nodes and training read
    their defaults from here. The cache holds ``cache_frames`` latent frames: :data:`COND_FRAMES` condition frames
    (reference, garment; none with ``conditions=False``), a sink of ``sink_chunks`` chunks, and a FIFO history
    window that includes the chunk being generated.

    The fields after ``keep_history`` describe the loops of other causal students (named bundles of them are the
    stream profiles, :mod:`chameleon_core.profiles`); their defaults are FashionChameleon's loop.
    """

    chunk_frames: int = 3
    """Latent frames generated per autoregressive step (3 = 12 video frames)."""
    cache_frames: int = 23
    """Total frames the cache holds: 2 conditions + sink + history (23 = 2 + 21 training frames)."""
    sink_chunks: int = 1
    """Chunks kept forever after the conditions (the paper's sink: the first chunk)."""
    steps: int = 4
    """Denoising steps per chunk (the student is distilled for 4: timesteps 1000, 750, 500, 250 before the shift)."""
    shift: float = 5.0
    """Flow shift that warps the student's timesteps (5 for Wan2.2-TI2V-5B: [1000, 937.5, 833.3, 625])."""
    keep_history: bool = True
    """Keep every chunk's clean latents in the state (the node graph reads them: ``StreamState.latents()``). False
    keeps only the chunks whose frames are still in the KV cache (a prompt switch re-caches them) and the last one,
    so host memory stays flat however long a live stream runs (about 2 MiB per chunk at 1280x704 otherwise)."""
    conditions: bool = True
    """Reference and garment prefilled in front of the video (FashionChameleon's in-context conditions, RoPE frames
    0 and 1). False: a plain text-/image-to-video stream, whose video starts at RoPE frame 0."""
    student_timesteps: tuple[int, ...] | None = None
    """Explicit raw denoising steps (CausVid's (1000, 757, 522)); None: ``steps`` evenly spaced from 1000."""
    warp: bool = True
    """Map the raw steps through the shifted training table (``table[1000 - s]``, σ = t / 1000). False feeds them as
    they are and takes σ from the table entry nearest each (CausVid)."""
    sampler: str = "renoise"
    """One of :data:`SAMPLERS`."""
    timestep_input: str = "rounded"
    """One of :data:`TIMESTEP_INPUTS`."""
    shot_rope_offset: int = 0
    """RoPE frames added per new shot (LongLive 2.0's multi-shot offset: 8): a prompt switch that starts a new shot
    moves every later frame's position by this much."""
    shot_sink: bool = False
    """The first chunk of a new shot is kept in the cache like a second sink until the next shot (LongLive 2.0's
    multi-shot sink); the history window shrinks by a chunk while it is held outside it."""
    prompt_recache: str = "chunks"
    """One of :data:`PROMPT_RECACHE`."""

    def __post_init__(self) -> None:
        for name, low, high in (("chunk_frames", 1, MAX_CHUNK_FRAMES), ("cache_frames", 1, MAX_CACHE_FRAMES),
                                ("sink_chunks", 0, MAX_CACHE_FRAMES), ("steps", 1, MAX_STEPS)):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(
                    f"{name} must be a whole number in {low}..{high}, got {value!r}; the defaults are "
                    f"chunk_frames=3, cache_frames=23, sink_chunks=1, steps=4 (the student is distilled for 4)"
                )
        for name in ("keep_history", "conditions", "warp", "shot_sink"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if isinstance(self.shift, bool) or not isinstance(self.shift, (int, float)) or not math.isfinite(self.shift) \
                or self.shift <= 0:
            raise ValueError(f"shift must be a finite number > 0, got {self.shift!r}; Wan2.2-TI2V-5B uses 5.0")
        for name, allowed in (("sampler", SAMPLERS), ("timestep_input", TIMESTEP_INPUTS),
                              ("prompt_recache", PROMPT_RECACHE)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if isinstance(self.shot_rope_offset, bool) or not isinstance(self.shot_rope_offset, int) \
                or not 0 <= self.shot_rope_offset <= MAX_CACHE_FRAMES:
            raise ValueError(f"shot_rope_offset must be a whole number in 0..{MAX_CACHE_FRAMES}, got "
                             f"{self.shot_rope_offset!r}; LongLive 2.0 uses 8, 0 turns it off")
        if self.student_timesteps is not None:
            raw = self.student_timesteps
            if not isinstance(raw, tuple) or not raw or any(
                    isinstance(s, bool) or not isinstance(s, int) or not 0 < s <= MAX_STEPS for s in raw):
                raise ValueError(f"student_timesteps must be a tuple of whole numbers in 1..{MAX_STEPS}, got {raw!r}; "
                                 "e.g. (1000, 750, 500, 250)")
            if list(raw) != sorted(raw, reverse=True) or len(set(raw)) != len(raw):
                raise ValueError(f"student_timesteps must be strictly decreasing, got {raw!r}")
            if len(raw) != self.steps:
                raise ValueError(f"student_timesteps {raw!r} has {len(raw)} steps but steps={self.steps}; give "
                                 f"steps={len(raw)}")
        if self.shot_sink and self.sink_chunks < 1:
            raise ValueError("shot_sink needs a sink (sink_chunks >= 1): the shot's first chunk is kept beside it")
        if self.window_frames < self.chunk_frames * (2 if self.shot_sink else 1):
            need = self.chunk_frames * (2 if self.shot_sink else 1)
            raise ValueError(
                f"cache_frames={self.cache_frames} leaves {self.window_frames} history frames after "
                f"{self.cond_frames} condition and {self.sink_frames} sink frames; it must be at least "
                f"{'two chunks (one may hold a shot sink)' if self.shot_sink else 'one chunk'} ({need}). "
                f"Raise cache_frames to >= {self.cond_frames + self.sink_frames + need} or shrink the sink."
            )

    @property
    def cond_frames(self) -> int:
        """Condition frames in front of the video: :data:`COND_FRAMES`, or 0 without conditions."""
        return COND_FRAMES if self.conditions else 0

    @property
    def sink_frames(self) -> int:
        return self.sink_chunks * self.chunk_frames

    @property
    def window_frames(self) -> int:
        """FIFO history frames, including the chunk being generated."""
        return self.cache_frames - self.cond_frames - self.sink_frames
