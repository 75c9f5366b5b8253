"""The latent cache: what ``prepare`` writes and every training stage reads, so training never decodes video.

Layout of a cache folder::

    manifest.json               items (key, file, width, height, frames, latent shape, prompt tokens), VAE and text
                                encoder used, the text length prompts were cut to and how many were cut
    items/<key>.safetensors     one sample: model-space latents and prompt embeddings (below)

Tensors of an item: ``video [C, T, h, w]``, ``reference [C, 1, h, w]``, ``garment [C, 1, h, w]`` (model-space
latents, :func:`chameleon_core.latents.to_model_space`), and umT5 features ``text_dynamic [L1, D]``
(``en_long[0]``), ``text_full [L2, D]`` (``en_long[0] + " " + en_long[1]``), ``text_empty [L3, D]`` (``""``).

:class:`BucketSampler` draws global batches from aspect buckets (one (width, height) per batch) in a seeded order;
its position is part of the training checkpoint. Every item is checked as it is read (:meth:`LatentCache.load`): a
damaged file, a missing tensor, a shape that disagrees with the manifest or a NaN/inf is a
:class:`~.data.DataError` naming the item and the fix. Before training, :meth:`LatentCache.check_text_len` checks
that every cached prompt fits the model's text length (``prepare --text-len`` cuts them). Each process takes its slice of the global batch, and every
random draw of a sample (caption variant, timestep, noise) comes from :func:`sample_generator` keyed by the step and
the sample's slot in the global batch, so results do not depend on the number of processes.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from .data import DataError

MANIFEST = "manifest.json"
ITEMS = "items"
TEXT_VARIANTS = ("dynamic", "full", "empty")
ITEM_TENSORS = ("video", "reference", "garment", *(f"text_{v}" for v in TEXT_VARIANTS))


def sample_generator(seed: int, step: int, slot: int, stream: int = 0) -> torch.Generator:
    """A CPU generator for the sample in ``slot`` of the global batch at ``step`` (``stream`` separates uses)."""
    state = np.random.SeedSequence([seed, step, slot, stream]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def choose_text(gen: torch.Generator, full_prob: float, empty_prob: float) -> str:
    """The caption variant of one sample: ``empty`` with ``empty_prob`` (CFG dropout), else ``full`` with
    ``full_prob`` and ``dynamic`` otherwise (the paper's 70/30 mix)."""
    u_empty, u_full = torch.rand(2, generator=gen).tolist()
    if u_empty < empty_prob:
        return "empty"
    return "full" if u_full < full_prob else "dynamic"


@dataclass(frozen=True)
class CacheItem:
    key: str
    file: str
    width: int
    height: int
    frames: int
    latent_shape: tuple[int, ...]
    text_tokens: dict[str, int] | None = None
    """Prompt features per caption variant (``prepare`` records them; None in caches written before it did)."""

    @property
    def bucket(self) -> tuple[int, int]:
        return (self.width, self.height)


class LatentCache:
    """Read-only view of a cache folder written by ``prepare``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        manifest = self.root / MANIFEST
        if not manifest.is_file():
            raise FileNotFoundError(
                f"no latent cache at {self.root} ({MANIFEST} missing); build it with "
                "python -m chameleon_core.training prepare --csv DATA.csv --out CACHE, then set data.cache"
            )
        try:
            meta = json.loads(manifest.read_text())
            self.items = [
                CacheItem(i["key"], i["file"], int(i["width"]), int(i["height"]), int(i["frames"]),
                          tuple(i["latent_shape"]), i.get("text_tokens"))
                for i in meta["items"]
            ]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise DataError(f"the latent cache's manifest {manifest} is damaged ({type(e).__name__}: {e}); rerun "
                            "prepare with the same --out (cached items are kept, the manifest is rewritten)") from None
        self.meta = meta
        if not self.items:
            raise ValueError(f"latent cache {self.root} holds no items; rerun prepare (were all rows skipped?)")

    def __len__(self) -> int:
        return len(self.items)

    def _damaged(self, item: CacheItem, what: str) -> DataError:
        return DataError(
            f"latent cache item {self.root / item.file} (key {item.key}) {what}; delete that file and rerun prepare "
            "with the same --csv and --out (it encodes only the missing items), then resume the training"
        )

    def load(self, index: int) -> dict[str, torch.Tensor]:
        """The tensors of item ``index``, checked: all present, latent shape as the manifest says, finite."""
        item = self.items[index]
        try:
            with safe_open(str(self.root / item.file), framework="pt") as f:
                out = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 - safe_open is not a dict
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise self._damaged(item, f"cannot be read ({type(e).__name__}: {e})") from None
        missing = [n for n in ITEM_TENSORS if n not in out]
        if missing:
            raise self._damaged(item, f"lacks the tensor(s) {missing}")
        if tuple(out["video"].shape) != item.latent_shape:
            raise self._damaged(item, f"holds video latents of shape {tuple(out['video'].shape)}, but the manifest "
                                      f"says {item.latent_shape}")
        bad = [n for n in ITEM_TENSORS if not bool(torch.isfinite(out[n]).all())]
        if bad:
            raise self._damaged(item, f"holds NaN or inf in {bad}")
        return out

    def text_tokens(self, index: int) -> dict[str, int]:
        """Prompt features per caption variant of item ``index`` (from the manifest, else the file's header)."""
        item = self.items[index]
        if item.text_tokens is not None:
            return item.text_tokens
        try:
            with safe_open(str(self.root / item.file), framework="pt") as f:
                return {v: int(f.get_slice(f"text_{v}").get_shape()[0]) for v in TEXT_VARIANTS}
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise self._damaged(item, f"cannot be read ({type(e).__name__}: {e})") from None

    def check_text_len(self, text_len: int | None) -> None:
        """Refuse, before training, a cache holding prompts longer than the model's ``text_len`` tokens (naming the
        longest items): ``prepare --text-len`` cuts them as Wan's tokenizer does."""
        if text_len is None:
            return
        over = []
        for i, item in enumerate(self.items):
            longest = max(self.text_tokens(i).values())
            if longest > text_len:
                over.append((longest, item.key))
        if over:
            over.sort(reverse=True)
            cut = self.meta.get("text_len")
            raise DataError(
                f"the latent cache {self.root} holds prompts longer than the model's text length {text_len}: "
                f"{len(over)} of {len(self.items)} items (longest: {', '.join(f'{k} {n} tokens' for n, k in over[:3])})"
                f"{f'; it was prepared with --text-len {cut}' if cut else ''}. Prepare the cache again into a new "
                f"--out with --text-len {text_len} (captions are cut as Wan's tokenizer cuts them), or train a model "
                f"with model.text_len >= {over[0][0]}"
            )


@dataclass
class Batch:
    """One process's samples of a step (all of one size)."""

    video: torch.Tensor
    """``[B, C, T, h, w]`` fp32 model-space latents."""
    reference: torch.Tensor
    """``[B, C, 1, h, w]``."""
    garment: torch.Tensor
    """``[B, C, 1, h, w]``."""
    context: torch.Tensor
    """``[B, L, D]`` prompt features, zero-padded to the longest (the DiT zero-pads to text_len anyway)."""
    slots: list[int]
    """Each sample's slot in the global batch (for :func:`sample_generator`)."""
    keys: list[str]
    text: list[str]
    """Caption variant of each sample."""

    def __len__(self) -> int:
        return len(self.slots)

    def split(self, size: int) -> list[Batch]:
        """Micro-batches of ``size`` samples."""
        out = []
        for s in range(0, len(self), size):
            sl = slice(s, s + size)
            out.append(Batch(self.video[sl], self.reference[sl], self.garment[sl], self.context[sl],
                             self.slots[sl], self.keys[sl], self.text[sl]))
        return out

    def to(self, device: torch.device) -> Batch:
        return Batch(self.video.to(device), self.reference.to(device), self.garment.to(device),
                     self.context.to(device), self.slots, self.keys, self.text)


class BucketSampler:
    """Global batches of ``batch_size`` cache indices, one aspect bucket per batch, in a seeded order per epoch.

    Each epoch shuffles every bucket, cuts it into full batches (a remainder smaller than a batch waits for the
    next epoch's shuffle) and shuffles the batch order. The position (epoch, batch) is saved and restored.
    """

    def __init__(self, buckets: list[tuple[int, int]], batch_size: int, seed: int, fixed: bool = False) -> None:
        self.batch_size = batch_size
        self.seed = seed
        self.fixed = fixed
        self.groups: dict[tuple[int, int], list[int]] = {}
        for i, b in enumerate(buckets):
            self.groups.setdefault(tuple(b), []).append(i)
        if all(len(v) < batch_size for v in self.groups.values()):
            sizes = {f"{w}x{h}": len(v) for (w, h), v in self.groups.items()}
            raise ValueError(
                f"no aspect bucket holds a full global batch of {batch_size} samples (bucket sizes {sizes}); "
                f"lower data.batch_size or add samples"
            )
        self.epoch = 0
        self.index = 0
        self._batches = self._epoch_batches(0)

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 100_003 + epoch)
        batches = []
        for key in sorted(self.groups):
            idx = list(self.groups[key])
            if not self.fixed:
                rng.shuffle(idx)
            batches += [idx[s : s + self.batch_size] for s in range(0, len(idx) - self.batch_size + 1, self.batch_size)]
        if not self.fixed:
            rng.shuffle(batches)
        return batches

    def next(self) -> list[int]:
        if self.fixed:
            return self._batches[0]
        if self.index >= len(self._batches):
            self.epoch += 1
            self.index = 0
            self._batches = self._epoch_batches(self.epoch)
        batch = self._batches[self.index]
        self.index += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._batches = self._epoch_batches(self.epoch)


class LatentLoader:
    """This process's share of each global batch, with caption variants drawn per sample."""

    def __init__(self, cache: LatentCache, *, batch_size: int, rank: int, world_size: int, seed: int,
                 full_prob: float, empty_prob: float, fixed: bool = False) -> None:
        if batch_size % world_size:
            raise ValueError(
                f"data.batch_size={batch_size} is not divisible by the {world_size} processes; use a multiple of "
                f"{world_size}"
            )
        self.cache = cache
        self.rank, self.world = rank, world_size
        self.local = batch_size // world_size
        self.seed, self.full_prob, self.empty_prob = seed, full_prob, empty_prob
        self.sampler = BucketSampler([i.bucket for i in cache.items], batch_size, seed, fixed)

    def next(self, step: int) -> Batch:
        """The local batch for optimiser step ``step``."""
        indices = self.sampler.next()
        first = self.rank * self.local
        slots = list(range(first, first + self.local))
        samples = [self.cache.load(indices[s]) for s in slots]
        text = [choose_text(sample_generator(self.seed, step, s, stream=1), self.full_prob, self.empty_prob)
                for s in slots]
        ctx = [smp[f"text_{t}"].float() for smp, t in zip(samples, text)]
        length = max(c.shape[0] for c in ctx)
        context = torch.stack([torch.nn.functional.pad(c, (0, 0, 0, length - c.shape[0])) for c in ctx])
        return Batch(
            video=torch.stack([s["video"].float() for s in samples]),
            reference=torch.stack([s["reference"].float() for s in samples]),
            garment=torch.stack([s["garment"].float() for s in samples]),
            context=context,
            slots=slots,
            keys=[self.cache.items[indices[s]].key for s in slots],
            text=text,
        )

    def state_dict(self) -> dict[str, int]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.load_state_dict(state)
