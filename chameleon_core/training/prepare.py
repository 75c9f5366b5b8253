"""``prepare``: build the latent cache (:mod:`.latent_cache`) from a training CSV, so training never decodes video.

1. **Check every row first** (:func:`~.data.check_row`, each process its share of the rows): caption JSON, video
   found and decodable with enough frames, reference and garment found and readable. Every bad row is listed in one
   report; without ``--skip-bad`` nothing is encoded, with it the bad rows are left out.
2. **Encode** the good rows: read and fit the video, reference and garment (:mod:`.data`), VAE-encode them
   (:meth:`WanVAE.encode` / :meth:`WanVAE.encode_image`, then :func:`chameleon_core.latents.to_model_space`), encode
   the three caption variants (dynamic only, full, empty) with umT5 (:mod:`chameleon_core.text`), and write
   ``items/<key>.safetensors``. Rows are split across processes by rank (``torchrun``); an item whose file exists is
   skipped, so an interrupted ``prepare`` resumes where it stopped.
3. Rank 0 writes ``manifest.json``.

**Long captions** are cut to ``--text-len`` tokens (the model's text length; 512 for every released Wan) exactly as
Wan's tokenizer cuts them: umT5's tokenizer with ``truncation=True, max_length=text_len`` keeps the first
``text_len - 1`` tokens and ends with ``</s>``. The encoder then sees the cut prompt, as at inference. How many
captions were cut is logged and stored in the manifest (``truncated_captions``; per item ``text_truncated``), so
training never meets a prompt longer than the model takes.

Test stand-ins: ``--vae random:wan2.2-tiny`` (seeded random VAE of a preset) and ``--text-encoder random:DIM``
(a deterministic hash-of-words embedding of width DIM, NOT a text encoder: for tests and benchmarks only; a word is
a token, cut the same way).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from chameleon_core.frames import is_whole_video
from chameleon_core.latents import to_model_space
from chameleon_core.text import TEXT_LEN

from .data import DataError, RowProblem, TrainRow, bucket_size, check_row, load_sample, scan_train_csv
from .distributed import Dist, all_gather_object, barrier, init_distributed, shutdown
from .faults import FailFast, raised_everywhere
from .latent_cache import ITEMS, MANIFEST, TEXT_VARIANTS
from .parallel import parse_dtype

logger = logging.getLogger(__name__)

TextEncoder = Callable[[list[str]], list[torch.Tensor]]


@dataclass
class CaptionEncoder:
    """Prompt features cut to ``max_length`` tokens the way Wan's tokenizer cuts them, and the uncut token counts.

    ``encode(prompts) -> [1, L_i, D]`` per prompt with ``L_i <= max_length``; ``count(prompt)`` is the prompt's token
    count before cutting (special tokens included), so ``count(p) > max_length`` means ``p`` was cut.
    """

    encode: TextEncoder
    count: Callable[[str], int]
    max_length: int

    def __call__(self, prompts: list[str]) -> list[torch.Tensor]:
        return self.encode(prompts)


def random_text_encoder(dim: int, max_length: int = TEXT_LEN) -> CaptionEncoder:
    """A deterministic stand-in: one vector per lower-cased word (seeded by its hash) plus an end token.

    The empty prompt gives the end token alone, as umT5 gives ``</s>``; a prompt of more than ``max_length - 1``
    words keeps the first ``max_length - 1`` and the end token, as umT5's tokenizer truncates. For tests only: it
    carries no meaning.
    """

    def vec(token: str) -> torch.Tensor:
        seed = int.from_bytes(hashlib.sha256(token.encode()).digest()[:8], "little")
        return torch.randn(dim, generator=torch.Generator().manual_seed(seed))

    def words(prompt: str) -> list[str]:
        return re.findall(r"\w+", prompt.lower())

    def encode(prompts: list[str]) -> list[torch.Tensor]:
        return [torch.stack([vec(w) for w in words(p)[: max_length - 1]] + [vec("</s>")])[None] for p in prompts]

    return CaptionEncoder(encode, lambda p: len(words(p)) + 1, max_length)


class _DropTruncationWarnings(logging.Filter):
    """prepare reports truncated captions once, as a count; the encoder's per-prompt warning would repeat it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "kept the first" not in record.getMessage()


_DROP_TRUNCATION_WARNINGS = _DropTruncationWarnings()


def make_text_encoder(spec: str, device: torch.device, max_length: int = TEXT_LEN) -> CaptionEncoder:
    """umT5 from a folder (HF layout), or ``random:DIM`` (the test stand-in), cutting prompts at ``max_length``."""
    if max_length < 1:
        raise ValueError(f"--text-len must be >= 1 token, got {max_length}; Wan uses {TEXT_LEN}")
    if spec.startswith("random:"):
        try:
            dim = int(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"--text-encoder {spec!r}: expected random:DIM with an integer width") from None
        return random_text_encoder(dim, max_length)
    from chameleon_core.text import clean_prompt, load_prompt_encoder

    encoder = load_prompt_encoder(spec, device=device, max_length=max_length)
    text_log = logging.getLogger("chameleon_core.text")

    def encode(prompts: list[str]) -> list[torch.Tensor]:
        # only while prepare encodes: anyone else using the text encoder in this process keeps the warning
        text_log.addFilter(_DROP_TRUNCATION_WARNINGS)
        try:
            return [e.float().cpu() for e in encoder(prompts)]
        finally:
            text_log.removeFilter(_DROP_TRUNCATION_WARNINGS)

    def count(prompt: str) -> int:
        return len(encoder.tokenizer(clean_prompt(prompt), add_special_tokens=True, truncation=False)["input_ids"])

    return CaptionEncoder(encode, count, max_length)


def make_vae(spec: str, device: torch.device):
    if spec.startswith("random:"):
        from chameleon_core.vae import build_vae

        return build_vae(spec.split(":", 1)[1], device=device, seed=0)
    from chameleon_core.checkpoints import load_vae

    return load_vae(spec, device=device)


def encode_row(row: TrainRow, vae, text: TextEncoder, frames: int, width: int, height: int,
               dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of one cache item. ``text``: a :class:`CaptionEncoder` (its cuts are recorded in the
    metadata as ``text_truncated``) or any callable with the same output."""
    return encode_rows([row], vae, text, frames, width, height, dtype)[0]


def encode_rows(rows: list[TrainRow], vae, text: TextEncoder, frames: int, width: int, height: int,
                dtype: torch.dtype) -> list[tuple[dict[str, torch.Tensor], dict[str, str]]]:
    """:func:`encode_row` of several rows, their pixels VAE-encoded together (rows of one bucket size in one batch):
    on a CPU a small VAE's convolutions cost per call, and 16 clips of 33 x 64 x 64 encode 4.6x faster a clip in one
    call than one by one (the world's prepare). Each item equals :func:`encode_row`'s to float rounding (the VAE
    treats batch items independently). Memory grows with the batch: a caller at full size passes one row."""
    samples = [load_sample(row, frames, *bucket_size(row, width, height)) for row in rows]
    dev, vdt = vae.device, vae.dtype
    encoded: list[dict[str, torch.Tensor]] = [{} for _ in rows]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, sample in enumerate(samples):
        groups.setdefault(tuple(sample["video"].shape), []).append(i)
    with torch.no_grad():
        for members in groups.values():
            videos = torch.cat([samples[i]["video"] for i in members]).to(dev, vdt)
            images = torch.cat([samples[i][k] for k in ("reference", "garment") for i in members]).to(dev, vdt)
            video = to_model_space(vae.encode(videos).float())  # [B, C, T, h, w]
            image = to_model_space(vae.encode_image(images).float())  # [2B, C, 1, h, w]
            for j, i in enumerate(members):
                encoded[i] = {"video": video[j], "reference": image[j], "garment": image[len(members) + j]}
    out = []
    for row, sample, tensors in zip(rows, samples, encoded):
        texts = sample["texts"]
        with torch.no_grad():
            embeds = text([texts[v] for v in TEXT_VARIANTS])
        for v, e in zip(TEXT_VARIANTS, embeds):
            tensors[f"text_{v}"] = e[0]
        tensors = {k: t.detach().to("cpu", dtype).contiguous() for k, t in tensors.items()}
        truncated = []
        if isinstance(text, CaptionEncoder):
            truncated = [v for v in TEXT_VARIANTS if text.count(texts[v]) > text.max_length]
        _, h, w = sample["reference"].shape[1:]
        meta = {"key": row.key, "width": str(w), "height": str(h), "frames": str(frames), "csv_row": str(row.row),
                "video": str(row.video), "prompt_dynamic": texts["dynamic"], "prompt_full": texts["full"],
                "text_truncated": ",".join(truncated)}
        out.append((tensors, meta))
    return out


def write_manifest(out: Path, extra: dict[str, object]) -> int:
    """Scan ``items/`` and write ``manifest.json`` (with per-item prompt lengths and the count of cut captions);
    returns the item count."""
    items = []
    truncated = 0
    for f in sorted((out / ITEMS).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            meta = st.metadata()
            shape = list(st.get_slice("video").get_shape())
            tokens = {v: int(st.get_slice(f"text_{v}").get_shape()[0]) for v in TEXT_VARIANTS
                      if f"text_{v}" in st.keys()}  # noqa: SIM118 - safe_open is not a dict
        cut = [v for v in (meta.get("text_truncated") or "").split(",") if v]
        truncated += len(cut)
        items.append({"key": meta["key"], "file": f"{ITEMS}/{f.name}", "width": int(meta["width"]),
                      "height": int(meta["height"]), "frames": int(meta["frames"]), "latent_shape": shape,
                      "text_tokens": tokens, "text_truncated": cut})
    tmp = out / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps({"version": 1, **extra, "truncated_captions": truncated, "items": items}, indent=1))
    os.replace(tmp, out / MANIFEST)
    return len(items)


def _shown(video: Path, csv: Path) -> str:
    """A video path as the CSV gives it (relative to the CSV's folder when it is inside)."""
    try:
        return str(video.relative_to(csv.parent))
    except ValueError:
        return str(video)


def bad_rows_report(csv: str | Path, problems: list[RowProblem], total: int, skip_bad: bool) -> str:
    """One report listing every bad row, and what to do."""
    lines = [f"{len(problems)} of {total} rows of {csv} cannot be used:"]
    lines += [f"  {p}" for p in sorted(problems, key=lambda p: p.row)]
    lines.append("These rows are skipped (--skip-bad)." if skip_bad else
                 "Fix these rows (or remove them from the CSV), or pass --skip-bad to leave them out.")
    return "\n".join(lines)


def prepare(csv: str | Path, out: str | Path, *, vae: str, text_encoder: str, frames: int = 81, width: int = 704,
            height: int = 1280, dtype: str = "bf16", skip_bad: bool = False, device: str = "auto",
            keep_group: bool = False, text_len: int = TEXT_LEN) -> int:
    """Build (or complete) the cache; every process checks and encodes rows ``rank::world``. Returns the item count
    (rank 0). ``text_len``: captions are cut to this many tokens (the model's text length).

    ``keep_group``: leave the process group up afterwards (a caller that trains next in the same processes)."""
    dist = init_distributed(device)
    state = {"where": "checking the rows"}
    ok = False
    try:
        with FailFast(dist.rank, dist.world_size, "prepare", where=lambda: state["where"]):
            count = _prepare(dist, state, Path(csv), Path(out), vae=vae, text_encoder=text_encoder, frames=frames,
                             width=width, height=height, dtype=dtype, skip_bad=skip_bad, text_len=text_len)
        ok = True
        return count
    finally:
        if not keep_group:
            shutdown(ok=ok)


def _prepare(dist: Dist, state: dict[str, str], csv: Path, out: Path, *, vae: str, text_encoder: str, frames: int,
             width: int, height: int, dtype: str, skip_bad: bool, text_len: int) -> int:
    if not is_whole_video(frames):
        raise raised_everywhere(ValueError(f"--frames must be 4k+1 (81, 49, 9, 5, ...), got {frames}"))
    if text_len < 1:
        raise raised_everywhere(ValueError(f"--text-len must be >= 1 token, got {text_len}; Wan uses {TEXT_LEN}"))
    st_dtype = parse_dtype(dtype)
    try:
        rows, problems = scan_train_csv(csv)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file; give a folder for the latent cache")
        for flag, spec in (("--vae", vae), ("--text-encoder", text_encoder)):
            if not spec.startswith("random:") and not Path(spec).exists():
                raise FileNotFoundError(f"{flag} {spec}: no such file or folder; give the path of the "
                                        f"{'Wan2.2 VAE file' if flag == '--vae' else 'umT5 folder (HF layout)'}")
    except (ValueError, OSError) as e:  # the same file on every process: the same error everywhere
        raise raised_everywhere(e) from None
    # 1. Check every row (this process's share), then report all bad rows at once.
    mine = rows[dist.rank :: dist.world_size]
    local = []
    for row in mine:
        state["where"] = f"checking row {row.row}"
        local += [RowProblem(row.row, _shown(row.video, csv), p) for p in check_row(row, frames)]
    checked = [p for part in all_gather_object(local) for p in part]
    total = len(rows) + len({p.row for p in problems})  # rows that did not even parse are not in `rows`
    problems = sorted(problems + checked, key=lambda p: p.row)
    if problems:
        report = bad_rows_report(csv, problems, total, skip_bad)
        if not skip_bad:
            raise raised_everywhere(DataError(report))
        if dist.is_main:
            logger.warning("%s", report)
    bad = {p.row for p in problems}
    # 2. Encode the good rows of this process that are not cached yet.
    (out / ITEMS).mkdir(parents=True, exist_ok=True)
    todo = [r for r in mine if r.row not in bad and not (out / ITEMS / f"{r.key}.safetensors").is_file()]
    logger.info("prepare: rank %d has %d rows, %d bad, %d already cached, %d to encode", dist.rank, len(mine),
                sum(r.row in bad for r in mine), len(mine) - len(todo) - sum(r.row in bad for r in mine), len(todo))
    late: list[str] = []
    if todo:
        state["where"] = "loading the VAE and the text encoder"
        the_vae = make_vae(vae, dist.device)
        text = make_text_encoder(text_encoder, dist.device, text_len)
        for row in todo:
            state["where"] = f"encoding row {row.row} ({row.video})"
            try:
                tensors, meta = encode_row(row, the_vae, text, frames, width, height, st_dtype)
            except DataError as e:  # passed the check but failed to decode in full
                if not skip_bad:
                    raise
                late.append(str(e))
                continue
            target = out / ITEMS / f"{row.key}.safetensors"
            tmp = target.with_suffix(f".tmp{dist.rank}")
            save_file(tensors, str(tmp), metadata=meta)
            os.replace(tmp, target)  # atomic: a killed prepare never leaves a half item
    state["where"] = "writing the manifest"
    all_late = [b for part in all_gather_object(late) for b in part]
    barrier()
    count = 0
    if dist.is_main:
        count = write_manifest(out, {"vae": vae, "text_encoder": text_encoder, "frames": frames, "width": width,
                                     "height": height, "csv": str(csv), "text_len": text_len})
        for b in all_late:
            logger.warning("skipped: %s", b)
        manifest = json.loads((out / MANIFEST).read_text())
        cut = manifest["truncated_captions"]
        captions = 2 * count  # the dynamic and full variants (the empty one is never cut)
        logger.info("latent cache %s: %d items, %d bad rows skipped; %d of %d captions were longer than %d tokens "
                    "and were cut to %d (the first %d tokens and </s>, as Wan's tokenizer cuts them)", out, count,
                    len(bad) + len(all_late), cut, captions, text_len, text_len, text_len - 1)
    barrier()
    return count
