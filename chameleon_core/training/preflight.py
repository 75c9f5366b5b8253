"""Checks of a training command before any work starts: devices, output folders, weights, the latent cache and the
reward, so that nothing the user can fix fails after an hour of training (``prepare``'s CSV: :mod:`.prepare_checks`).

:func:`check_stage` (``sft`` / ``forcing`` / ``dmd``) and :func:`check_bench` run in :mod:`.cli` after the config is
loaded (:mod:`.config` has checked every value's type and range) and before the process group, the models or the
data are touched. They read headers only: a checkpoint's names and shapes
(:func:`chameleon_core.checkpoints.inspect_checkpoint`), each cache item's safetensors header, the small aesthetic
MLP. Every problem raises :class:`PreflightError` (a ValueError, so the command's error policy shows it as one
message, exit code 2) naming the setting, the value and the fix.

What is not checked here (it needs the data itself): NaN in a cache item's tensors; it fails when the item is read.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from chameleon_core.checkpoints.errors import CheckpointError, check_regular_file
from chameleon_core.frames import is_whole_video, whole_video_at_most
from chameleon_core.tools.command import UsageError, check_output_folder

from .config import TrainConfig

logger = logging.getLogger(__name__)

SHOW = 5
"""Problems quoted in one message (the count of the rest follows)."""
ITEM_TENSORS = ("video", "reference", "garment", "text_dynamic", "text_full", "text_empty")
"""Tensors of a latent-cache item (:mod:`.latent_cache`)."""
PREPARE_HINT = "python -m chameleon_core.training prepare --csv DATA.csv --out CACHE --vae VAE --text-encoder DIR"


class PreflightError(UsageError):
    """A training command that cannot start: the message names the setting, the value and the fix."""


def listed(problems: Sequence[str], what: str) -> str:
    shown = "\n".join(f"  - {p}" for p in problems[:SHOW])
    more = f"\n  ... and {len(problems) - SHOW} more" if len(problems) > SHOW else ""
    return f"{len(problems)} {what}:\n{shown}{more}"


# -------------------------------------------------------------------------------------------------------------------
# Devices and processes
# -------------------------------------------------------------------------------------------------------------------


def world_size() -> int:
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise PreflightError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a whole number; start the processes "
                             "with torchrun --nproc_per_node N -m chameleon_core.training ...") from None


def check_device(name: str, flag: str) -> None:
    """``auto``, ``cpu``, or ``cuda`` on a machine that has one CUDA device per local process."""
    if name not in ("auto", "cpu", "cuda"):
        raise PreflightError(f"{flag} {name!r} is not a training device; use auto (CUDA when available), cpu or cuda")
    if name != "cuda":
        return
    if not torch.cuda.is_available():
        raise PreflightError(
            f"{flag} cuda: this PyTorch sees no CUDA device (torch.cuda.is_available() is False: no GPU, no driver, "
            f"or a CPU-only torch); use {flag} cpu (or auto), or install a CUDA build of torch"
        )
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if local >= torch.cuda.device_count():
        raise PreflightError(f"{flag} cuda: local process {local} needs CUDA device {local}, but this machine has "
                             f"{torch.cuda.device_count()}; start at most {torch.cuda.device_count()} processes per node")


# -------------------------------------------------------------------------------------------------------------------
# Weights
# -------------------------------------------------------------------------------------------------------------------


def weights_config(spec: str | None, key: str, cfg: TrainConfig, needed_for: str):
    """The :class:`~chameleon_core.config.WanConfig` of the weights ``spec`` names (``random:SEED``: the
    architecture preset), from the checkpoint's headers only."""
    from chameleon_core.config import preset

    if spec is None:
        raise PreflightError(f"{key} is not set; give {needed_for} with --set {key}=PATH, or random:SEED for a test run")
    config = preset(cfg.model.arch)
    if cfg.model.text_len is not None:
        config = replace(config, text_len=cfg.model.text_len)
    if spec.startswith("random:"):
        return config
    from chameleon_core.checkpoints import inspect_checkpoint

    try:
        return inspect_checkpoint(spec, text_len=cfg.model.text_len).config
    except CheckpointError as e:
        raise PreflightError(f"{key}={spec}: {e}") from None


def vae_channels(spec: str, flag: str) -> int:
    """Latent channels of the VAE ``spec`` names (``random:PRESET`` or a file), from its headers only."""
    from chameleon_core.vae import VAE_PRESETS

    if spec.startswith("random:"):
        name = spec.split(":", 1)[1]
        if name not in VAE_PRESETS:
            raise PreflightError(f"{flag} {spec!r}: there is no VAE preset {name!r}; use random:PRESET with one of "
                                 f"{sorted(VAE_PRESETS)} (tests only), or the path of the Wan VAE file")
        return VAE_PRESETS[name].z_dim
    from chameleon_core.checkpoints.vae import inspect_vae

    try:
        return inspect_vae(spec).z_dim
    except CheckpointError as e:
        raise PreflightError(f"{flag} {spec}: {e}") from None


# -------------------------------------------------------------------------------------------------------------------
# The latent cache
# -------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheSummary:
    """What the checks learned of a latent cache (from its manifest and item headers)."""

    items: int
    latent_channels: int
    text_dim: int
    latent_frames: tuple[int, ...]
    """Latent frame counts found."""
    buckets: dict[tuple[int, int], int]
    meta: dict[str, Any]


def _item_problem(root: Path, item: Any, index: int) -> tuple[str | None, tuple | None]:
    """(problem, (key, width, height, video shape, text dims)) of one manifest item."""
    from chameleon_core.checkpoints.tensors import read_safetensors_header

    if not isinstance(item, dict) or not {"key", "file", "width", "height", "latent_shape"} <= set(item):
        return f"manifest item {index} is malformed: {str(item)[:120]}", None
    rel = Path(str(item["file"]))
    if rel.is_absolute() or ".." in rel.parts:
        return f"item {item['key']}: its file {rel} is outside the cache folder", None
    path = root / rel
    try:
        check_regular_file(path, "cache item file", "run prepare again to re-encode it")
        entries, _ = read_safetensors_header(path)
    except CheckpointError as e:
        return f"item {item['key']}: {e}", None
    missing = [t for t in ITEM_TENSORS if t not in entries]
    if missing:
        return f"item {item['key']} ({path}) lacks the tensor(s) {missing}; it holds {sorted(entries)}", None
    shapes = {t: entries[t].shape for t in ITEM_TENSORS}
    not_float = [t for t in ITEM_TENSORS if not entries[t].dtype.is_floating_point]
    video = shapes["video"]
    if not_float:
        return f"item {item['key']} ({path}): tensor(s) {not_float} are not floating point", None
    if len(video) != 4 or list(video) != list(item["latent_shape"]):
        return (f"item {item['key']} ({path}): video latents {list(video)} differ from the manifest's "
                f"{list(item['latent_shape'])}"), None
    c, _, h, w = video
    for t in ("reference", "garment"):
        if list(shapes[t]) != [c, 1, h, w]:
            return f"item {item['key']} ({path}): {t} is {list(shapes[t])}, expected {[c, 1, h, w]}", None
    dims = {shapes[t][-1] for t in ITEM_TENSORS[3:] if len(shapes[t]) == 2}
    if len(dims) != 1 or any(len(shapes[t]) != 2 for t in ITEM_TENSORS[3:]):
        return f"item {item['key']} ({path}): prompt features are not [L, D] of one width: " \
               f"{[list(shapes[t]) for t in ITEM_TENSORS[3:]]}", None
    return None, (str(item["key"]), int(item["width"]), int(item["height"]), tuple(video), dims.pop())


def check_cache(root: str | Path, flag: str = "data.cache") -> CacheSummary:
    """The cache folder holds a readable ``manifest.json`` whose every item file exists, is a regular file with a
    sound safetensors header and the tensors and shapes the manifest gives."""
    root = Path(root).expanduser()
    if not root.exists():
        raise PreflightError(f"{flag} {root}: no such folder (absolute: {root.resolve()}); build the latent cache with "
                             f"{PREPARE_HINT.replace('CACHE', str(root))}, or --set {flag}=FOLDER")
    if not root.is_dir():
        raise PreflightError(f"{flag} {root} is a file, not a latent cache folder; pass the folder prepare wrote "
                             f"(--set {flag}=FOLDER)")
    manifest = root / "manifest.json"
    if not manifest.exists():
        raise PreflightError(
            f"{flag} {root} holds no manifest.json, so it is not a finished latent cache (prepare writes the manifest "
            "last); run prepare again with the same --csv and --out: it keeps the items already encoded"
        )
    fix = ("run prepare again with the same --csv and --out: it keeps the sound items, re-encodes missing ones and "
           "rewrites manifest.json (delete damaged item files first)")
    try:
        check_regular_file(manifest, "cache manifest", fix)
        meta = json.loads(manifest.read_text(encoding="utf-8"))
    except CheckpointError as e:
        raise PreflightError(f"{flag}: {e}") from None
    except (ValueError, OSError) as e:
        raise PreflightError(f"{flag}: the cache manifest {manifest} is damaged ({type(e).__name__}: {e}); {fix}") from None
    items = meta.get("items") if isinstance(meta, dict) else None
    if not isinstance(items, list):
        raise PreflightError(f"{flag}: the cache manifest {manifest} has no list of items; {fix}")
    if not items:
        raise PreflightError(f"{flag}: the latent cache {root} holds no items (were all rows skipped?); run prepare "
                             "on a CSV with usable rows")
    problems, found = [], []
    for i, item in enumerate(items):
        problem, info = _item_problem(root, item, i)
        if problem:
            problems.append(problem)
        else:
            found.append(info)
    if problems:
        raise PreflightError(f"{flag}: the latent cache {root} is damaged, " + listed(problems, "bad item(s)") +
                             f"\n{fix}")
    channels = {f[3][0] for f in found}
    dims = {f[4] for f in found}
    if len(channels) > 1 or len(dims) > 1:
        raise PreflightError(f"{flag}: the latent cache {root} mixes latent channels {sorted(channels)} or prompt widths "
                             f"{sorted(dims)} (two VAEs or text encoders); prepare one cache per VAE and encoder")
    return CacheSummary(len(found), channels.pop(), dims.pop(), tuple(sorted({f[3][1] for f in found})),
                        dict(Counter((f[1], f[2]) for f in found)), meta)


def check_cache_fits(cache: CacheSummary, cfg: TrainConfig, model, flag: str = "data.cache") -> None:
    """The cache's latents and prompt features fit the model, and its buckets hold the batch."""
    root = cfg.data.cache
    if cache.latent_channels != model.in_dim:
        raise PreflightError(
            f"{flag} {root} holds {cache.latent_channels}-channel latents but the model ({model.name}) takes "
            f"{model.in_dim}-channel ones; prepare the cache with the VAE of the model's family "
            f"({'Wan2.2' if model.in_dim == 48 else 'Wan2.1'})")
    if cache.text_dim != model.text_dim:
        raise PreflightError(
            f"{flag} {root} holds {cache.text_dim}-wide prompt features but the model ({model.name}) takes "
            f"text_dim={model.text_dim}; prepare the cache with the model's text encoder (umT5-XXL: 4096; tests: "
            f"--text-encoder random:{model.text_dim})")
    chunk = {"forcing": cfg.forcing.chunk_frames, "dmd": cfg.dmd.chunk_frames}.get(cfg.stage)
    if chunk is not None:
        bad = [t for t in cache.latent_frames if t % chunk]
        if bad:
            key = f"{cfg.stage}.chunk_frames"
            raise PreflightError(
                f"{flag} {root} holds videos of {bad} latent frames, not a multiple of {key}={chunk}; prepare the cache "
                f"with --frames 4k+1 whose latent count (k+1) is a multiple of {chunk}, or --set {key}=<a divisor>")
    if max(cache.buckets.values()) < cfg.data.batch_size:
        sizes = {f"{w}x{h}": n for (w, h), n in cache.buckets.items()}
        raise PreflightError(
            f"data.batch_size={cfg.data.batch_size}, but no aspect bucket of {flag} {root} holds that many samples "
            f"(bucket sizes {sizes}); lower data.batch_size (e.g. --set data.batch_size={max(cache.buckets.values())}) "
            "or prepare more samples")


# -------------------------------------------------------------------------------------------------------------------
# Stages
# -------------------------------------------------------------------------------------------------------------------


def check_batch(cfg: TrainConfig, processes: int) -> None:
    d = cfg.data
    if processes > 1 and not cfg.model.fsdp:
        raise PreflightError(f"{processes} processes need model.fsdp=true (FSDP2 is the only data-parallel path); "
                             "--set model.fsdp=true, or start one process")
    if d.batch_size % processes:
        raise PreflightError(f"data.batch_size={d.batch_size} is not divisible by the {processes} processes; use a "
                             f"multiple of {processes}")
    local = d.batch_size // processes
    if d.micro_batch is not None and local % d.micro_batch:
        raise PreflightError(f"data.micro_batch={d.micro_batch} does not divide the per-process batch {local} "
                             f"(data.batch_size={d.batch_size} over {processes} process(es)); use a divisor of {local}")


def _reward_folder(spec: str) -> None:
    """``dmd.reward`` names a folder with one aesthetic MLP file (loaded and checked: it is small) and a CLIP
    ViT-L/14 folder whose config says 768-wide projections and whose weight files are regular files."""
    from .reward import MLP_WIDTHS, load_aesthetic_mlp, reward_files

    again = "copy openai/clip-vit-large-patch14 again"
    try:
        mlp, clip_dir = reward_files(spec)
        load_aesthetic_mlp(mlp)
        config = check_regular_file(clip_dir / "config.json", "CLIP config", again)
        weights = [*clip_dir.glob("*.safetensors"), *clip_dir.glob("*.bin")]
        for w in weights:
            check_regular_file(w, "CLIP weight file", again)
    except (CheckpointError, FileNotFoundError, ValueError) as e:  # CheckpointError first: it is a ValueError too
        raise PreflightError(f"dmd.reward: {e}") from None
    try:
        values = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise PreflightError(f"dmd.reward: the CLIP config {config} is damaged ({e}); {again}") from None
    width = values.get("projection_dim") if isinstance(values, dict) else None
    if width is not None and width != MLP_WIDTHS[0]:
        raise PreflightError(f"dmd.reward: CLIP in {clip_dir} projects to {width} features but the aesthetic MLP "
                             f"takes {MLP_WIDTHS[0]}; use CLIP ViT-L/14 (openai/clip-vit-large-patch14)")
    if not weights:
        raise PreflightError(f"dmd.reward: the CLIP folder {clip_dir} holds no weights (*.safetensors); {again}")
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ImportError(f"dmd.reward {spec}: the aesthetic reward loads CLIP with transformers, which is not "
                          "installed: pip install transformers") from None


def check_dmd(cfg: TrainConfig, model, cache: CacheSummary) -> None:
    """The teacher, the reward (folder, MLP, CLIP config), the VAE that decodes for the reward, and the negative
    prompt embeddings of a DMD stage."""
    from .reward import STAND_IN_NAMES

    d = cfg.dmd
    teacher = weights_config(d.teacher, "dmd.teacher", cfg,
                             "the SFT teacher's weights (the real score and the critic's start)")
    if (teacher.in_dim, teacher.text_dim) != (model.in_dim, model.text_dim):
        raise PreflightError(
            f"dmd.teacher={d.teacher} is a {teacher.name} with {teacher.in_dim} latent channels and text_dim "
            f"{teacher.text_dim}, but the generator (model.init) has {model.in_dim} and {model.text_dim}; pass the SFT "
            "teacher of the same model family")
    if d.reward not in ("none", *STAND_IN_NAMES):
        _reward_folder(d.reward)
    if d.reward != "none":
        vae = d.extra.get("vae") or cache.meta.get("vae")
        flag = "dmd.extra.vae" if d.extra.get("vae") else f"the VAE named by {cfg.data.cache}/manifest.json"
        if vae is None:
            if d.reward not in STAND_IN_NAMES:
                raise PreflightError(
                    "the reward decodes frames, so GR-DMD needs the Wan VAE and the latent cache does not name one: "
                    "--set dmd.extra.vae=PATH (Wan2.2_VAE.pth), or dmd.reward=none for unweighted DMD")
        else:
            channels = vae_channels(str(vae), flag)
            if channels != model.in_dim:
                raise PreflightError(f"{flag} {vae} makes {channels}-channel latents but the model takes {model.in_dim}; "
                                     "pass the VAE of the model's family with --set dmd.extra.vae=PATH")
    negative = d.extra.get("negative")
    if negative:
        from chameleon_core.text import load_prompt_embeddings

        try:
            load_prompt_embeddings(negative, text_dim=model.text_dim)
        except CheckpointError as e:
            raise PreflightError(f"dmd.extra.negative: {e}") from None
    elif d.negative_prompt:
        raise PreflightError(
            f"dmd.negative_prompt is text ({d.negative_prompt[:40]!r}...), but training reads embeddings; encode it "
            "once with `python -m chameleon_core.tools.prompt_embeds --encoder DIR --prompt TEXT --out FILE` and set "
            "dmd.extra.negative=FILE")


def check_stage(cfg: TrainConfig) -> None:
    """Everything a training stage needs, checked before the process group, the models or the data are touched."""
    check_device(cfg.run.device, "run.device")
    check_output_folder(cfg.run.out, "run.out")
    check_batch(cfg, world_size())
    needed = {"sft": "the starting weights (Wan2.2-TI2V-5B)", "forcing": "the SFT teacher's weights",
              "dmd": "the teacher-forcing student's weights"}[cfg.stage]
    model = weights_config(cfg.model.init, "model.init", cfg, needed)
    cache = check_cache(cfg.data.cache)
    check_cache_fits(cache, cfg, model)
    if cfg.stage == "dmd":
        check_dmd(cfg, model, cache)


# -------------------------------------------------------------------------------------------------------------------
# Frames and sizes (prepare and bench)
# -------------------------------------------------------------------------------------------------------------------


def check_frames(frames: int, flag: str = "--frames") -> None:
    if not is_whole_video(frames):
        near = whole_video_at_most(frames)
        raise PreflightError(f"{flag} {frames}: the frame count must be 4k+1 (the VAE's causal frames: 9, 17, ..., 81), "
                             f"e.g. {flag} {near if near != frames else 81}")


def check_size(width: int, height: int, multiple: int) -> None:
    for flag, v in (("--width", width), ("--height", height)):
        if v < multiple or v % multiple:
            near = max(multiple, round(v / multiple) * multiple)
            raise PreflightError(f"{flag} {v}: must be a positive multiple of {multiple} (the VAE's stride times the "
                                 f"transformer's patch); e.g. {flag} {near}")
    from chameleon_core.memory import MAX_SIDE

    if max(width, height) > MAX_SIDE:
        raise PreflightError(f"--width {width} --height {height}: at most {MAX_SIDE} pixels a side; the paper trains at "
                             "--width 704 --height 1280")


def check_bench(args, cfg: TrainConfig) -> None:
    if args.steps < 1:
        raise PreflightError(f"--steps {args.steps}: the benchmark times at least 1 step (2 or more to leave out the "
                             "first); e.g. --steps 5")
    check_frames(args.frames)
    check_size(args.width, args.height, 32)
    check_device(cfg.run.device, "run.device")
    check_batch(cfg, world_size())
