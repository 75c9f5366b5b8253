"""``prepare``: build the latent cache (:mod:`.latent_cache`) from a training CSV, so training never decodes video.

Per row: read and fit the video, reference and garment (:mod:`.data`), VAE-encode them
(:meth:`WanVAE.encode` / :meth:`WanVAE.encode_image`, then :func:`chameleon_core.latents.to_model_space`), encode
the three caption variants (dynamic only, full, empty) with umT5 (:mod:`chameleon_core.text`), and write
``items/<key>.safetensors``. Rows are split across processes by rank (``torchrun``); an item whose file exists is
skipped, so an interrupted ``prepare`` resumes where it stopped. Rank 0 writes ``manifest.json`` at the end.

Test stand-ins: ``--vae random:wan2.2-tiny`` (seeded random VAE of a preset) and ``--text-encoder random:DIM``
(a deterministic hash-of-words embedding of width DIM, NOT a text encoder: for tests and benchmarks only).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from chameleon_core.latents import to_model_space

from .data import DataError, TrainRow, bucket_size, load_sample, read_train_csv
from .distributed import all_gather_object, barrier, init_distributed, shutdown
from .latent_cache import ITEMS, MANIFEST, TEXT_VARIANTS
from .parallel import parse_dtype

logger = logging.getLogger(__name__)

TextEncoder = Callable[[list[str]], list[torch.Tensor]]


def random_text_encoder(dim: int) -> TextEncoder:
    """A deterministic stand-in: one vector per lower-cased word (seeded by its hash) plus an end token.

    The empty prompt gives the end token alone, as umT5 gives ``</s>``. For tests only: it carries no meaning.
    """

    def vec(token: str) -> torch.Tensor:
        seed = int.from_bytes(hashlib.sha256(token.encode()).digest()[:8], "little")
        return torch.randn(dim, generator=torch.Generator().manual_seed(seed))

    def encode(prompts: list[str]) -> list[torch.Tensor]:
        return [torch.stack([vec(w) for w in re.findall(r"\w+", p.lower())] + [vec("</s>")])[None] for p in prompts]

    return encode


def make_text_encoder(spec: str, device: torch.device) -> TextEncoder:
    if spec.startswith("random:"):
        try:
            return random_text_encoder(int(spec.split(":", 1)[1]))
        except ValueError:
            raise ValueError(f"--text-encoder {spec!r}: expected random:DIM with an integer width") from None
    from chameleon_core.text import load_prompt_encoder

    encoder = load_prompt_encoder(spec, device=device)
    return lambda prompts: [e.float().cpu() for e in encoder(prompts)]


def make_vae(spec: str, device: torch.device):
    if spec.startswith("random:"):
        from chameleon_core.vae import build_vae

        return build_vae(spec.split(":", 1)[1], device=device, seed=0)
    from chameleon_core.checkpoints import load_vae

    return load_vae(spec, device=device)


def encode_row(row: TrainRow, vae, text: TextEncoder, frames: int, width: int, height: int,
               dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of one cache item."""
    w, h = bucket_size(row, width, height)
    sample = load_sample(row, frames, w, h)
    dev, vdt = vae.device, vae.dtype
    with torch.no_grad():
        video = to_model_space(vae.encode(sample["video"].to(dev, vdt)).float())[0]  # [C, T, h, w]
        ref = to_model_space(vae.encode_image(sample["reference"].to(dev, vdt)).float())[0]  # [C, 1, h, w]
        gar = to_model_space(vae.encode_image(sample["garment"].to(dev, vdt)).float())[0]
        texts = sample["texts"]
        embeds = text([texts[v] for v in TEXT_VARIANTS])
    tensors = {"video": video, "reference": ref, "garment": gar}
    for v, e in zip(TEXT_VARIANTS, embeds):
        tensors[f"text_{v}"] = e[0]
    tensors = {k: t.detach().to("cpu", dtype).contiguous() for k, t in tensors.items()}
    meta = {"key": row.key, "width": str(w), "height": str(h), "frames": str(frames), "csv_row": str(row.row),
            "video": str(row.video), "prompt_dynamic": texts["dynamic"], "prompt_full": texts["full"]}
    return tensors, meta


def write_manifest(out: Path, extra: dict[str, object]) -> int:
    """Scan ``items/`` and write ``manifest.json``; returns the item count."""
    items = []
    for f in sorted((out / ITEMS).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            meta = st.metadata()
            shape = list(st.get_slice("video").get_shape())
        items.append({"key": meta["key"], "file": f"{ITEMS}/{f.name}", "width": int(meta["width"]),
                      "height": int(meta["height"]), "frames": int(meta["frames"]), "latent_shape": shape})
    (out / MANIFEST).write_text(json.dumps({"version": 1, **extra, "items": items}, indent=1))
    return len(items)


def prepare(csv: str | Path, out: str | Path, *, vae: str, text_encoder: str, frames: int = 81, width: int = 704,
            height: int = 1280, dtype: str = "bf16", skip_bad: bool = False, device: str = "auto",
            keep_group: bool = False) -> int:
    """Build (or complete) the cache; every process handles rows ``rank::world``. Returns the item count (rank 0).

    ``keep_group``: leave the process group up afterwards (a caller that trains next in the same processes)."""
    dist = init_distributed(device)
    try:
        out = Path(out)
        (out / ITEMS).mkdir(parents=True, exist_ok=True)
        rows = read_train_csv(csv)
        mine = rows[dist.rank :: dist.world_size]
        todo = [r for r in mine if not (out / ITEMS / f"{r.key}.safetensors").is_file()]
        logger.info("prepare: rank %d has %d rows, %d already cached", dist.rank, len(mine), len(mine) - len(todo))
        bad: list[str] = []
        if todo:
            the_vae = make_vae(vae, dist.device)
            text = make_text_encoder(text_encoder, dist.device)
            st_dtype = parse_dtype(dtype)
            for row in todo:
                try:
                    tensors, meta = encode_row(row, the_vae, text, frames, width, height, st_dtype)
                except DataError as e:
                    if not skip_bad:
                        raise
                    bad.append(str(e))
                    continue
                target = out / ITEMS / f"{row.key}.safetensors"
                tmp = target.with_suffix(f".tmp{dist.rank}")
                save_file(tensors, str(tmp), metadata=meta)
                os.replace(tmp, target)  # atomic: a killed prepare never leaves a half item
        all_bad = [b for part in all_gather_object(bad) for b in part]
        barrier()
        count = 0
        if dist.is_main:
            count = write_manifest(out, {"vae": vae, "text_encoder": text_encoder, "frames": frames,
                                         "width": width, "height": height, "csv": str(csv)})
            for b in all_bad:
                logger.warning("skipped: %s", b)
            logger.info("latent cache %s: %d items, %d bad rows skipped", out, count, len(all_bad))
        barrier()
        return count
    finally:
        if not keep_group:
            shutdown()
