"""Finding the files of a checkpoint: a single file, the shards named by an index json, or the one checkpoint in a
folder; and the folder listings that error messages quote.

Transformers follow the Hugging Face conventions (``diffusion_pytorch_model*.safetensors`` with a
``*.safetensors.index.json``; a diffusers pipeline keeps its transformer in ``transformer/``). VAEs are single files
(the official ``Wan2.x_VAE.pth`` or ComfyUI's repackaged ``wan_2.1_vae`` / ``wan2.2_vae.safetensors``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import CheckpointError, CheckpointNotFoundError, check_regular_file

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
"""Suffixes read as safetensors (``.sft`` is the short form some ComfyUI repackages use)."""
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
"""Suffixes read with ``torch.load(weights_only=True)``."""
VAE_FILE_NAMES = ("Wan2.2_VAE.pth", "Wan2.1_VAE.pth", "wan2.2_vae.safetensors", "wan_2.1_vae.safetensors")
"""File names a folder is searched for when a folder is passed as a VAE (official, ComfyUI-repackaged)."""
SHOW = 5
"""Names quoted in an error message."""


def is_torch_file(path: Path) -> bool:
    return path.suffix.lower() in TORCH_SUFFIXES


def listing(folder: Path, limit: int = 8) -> str:
    """What a folder holds, for an error message: the first ``limit`` names, folders with a trailing ``/``."""
    names = sorted(x.name + ("/" if x.is_dir() else "") for x in folder.iterdir())
    if not names:
        return "nothing"
    return ", ".join(names[:limit]) + (f", ... ({len(names)} entries)" if len(names) > limit else "")


def resolve_checkpoint_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files that make up a transformer checkpoint: one file, or every shard named by an index json.

    ``path`` may be a ``.safetensors`` / ``.pt`` file, a ``*.safetensors.index.json``, or a directory holding one
    checkpoint (a Wan / diffusers model folder; a diffusers pipeline folder is searched in ``transformer/`` too).
    """
    p = Path(path).expanduser()
    if not p.exists():
        hint = f" (the folder {p.parent} exists; it holds {listing(p.parent)})" if p.parent.is_dir() else ""
        raise CheckpointNotFoundError(
            f"checkpoint not found: no file or folder at {p.resolve()}{hint}; check the path, or put the file in "
            "ComfyUI's models/diffusion_models folder"
        )
    if p.is_dir():
        return _resolve_dir(p)
    if p.name.endswith(".index.json"):
        return _shards_from_index(check_regular_file(p, "sharded-checkpoint index"))
    if p.suffix.lower() in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
        return [check_regular_file(p)]
    raise CheckpointError(
        f"unsupported checkpoint file type {p.suffix!r}: {p}; pass a .safetensors file, a *.safetensors.index.json "
        f"of a sharded checkpoint, a training checkpoint ({', '.join(TORCH_SUFFIXES)}), or the folder holding them"
    )


def _resolve_dir(folder: Path) -> list[Path]:
    searched = [folder] + ([folder / "transformer"] if (folder / "transformer").is_dir() else [])
    for d in searched:
        indexes = sorted(d.glob("*.safetensors.index.json"))
        if len(indexes) > 1:
            preferred = d / "diffusion_pytorch_model.safetensors.index.json"
            if preferred not in indexes:
                raise CheckpointError(
                    f"folder {d} holds several sharded checkpoints {[i.name for i in indexes]}; "
                    "pass the index json of the one to load"
                )
            indexes = [preferred]
        if indexes:
            return _shards_from_index(indexes[0])
        single = d / "diffusion_pytorch_model.safetensors"
        if single.exists():
            return [check_regular_file(single)]
        for suffixes in (SAFETENSORS_SUFFIXES, TORCH_SUFFIXES):
            # Non-regular entries (a FIFO named .safetensors) are listed too, so that they are refused by name.
            found = sorted(f for f in d.iterdir() if not f.is_dir() and f.suffix.lower() in suffixes)
            if len(found) == 1:
                return [check_regular_file(found[0])]
            if len(found) > 1:
                raise CheckpointError(
                    f"folder {d} holds several checkpoint files {[f.name for f in found]} and no index json; "
                    "pass the path of the file to load"
                )
    raise CheckpointNotFoundError(
        f"no transformer checkpoint in {folder}: searched the folders {[str(d) for d in searched]} for a "
        "*.safetensors.index.json, diffusion_pytorch_model.safetensors, a single *.safetensors or a single "
        f"{'/'.join(TORCH_SUFFIXES)} file; found {listing(folder)}. Pass the checkpoint file itself"
    )


def _shards_from_index(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        names = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(
            f"{index} is not a sharded-checkpoint index ({type(e).__name__}: {e}); expected JSON with a "
            '"weight_map": {tensor name: shard file}. Re-download it, or pass a single checkpoint file'
        ) from None
    shards = [index.parent / n for n in names]
    missing = [s.name for s in shards if not s.exists()]
    if missing:
        raise CheckpointNotFoundError(
            f"index {index} names {len(shards)} shards but {len(missing)} are missing from {index.parent}: "
            f"{missing[:SHOW]}; download every shard into the same folder"
        )
    return [check_regular_file(s, f"shard of {index.name}") for s in shards]


def resolve_vae_file(path: str | os.PathLike[str]) -> Path:
    """The one file of a VAE: ``path`` itself, the known file in a folder, or ``path`` plus a known suffix."""
    given = Path(path).expanduser()
    looked: list[Path] = [given]
    if given.is_dir():
        looked = [given / name for name in VAE_FILE_NAMES]
        found = [p for p in looked if p.is_file()]
        if len(found) == 1:
            return found[0]
        if found:
            raise CheckpointError(f"{given} holds several VAE files {[p.name for p in found]}; pass one of them")
    elif given.exists():
        check_regular_file(given, "VAE file")
        if given.suffix.lower() not in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
            raise CheckpointError(
                f"unsupported VAE file type {given.suffix!r} for {given}; expected one of "
                f"{list(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)}: pass the Wan VAE as safetensors or a torch .pth"
            )
        return given
    elif given.suffix.lower() not in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
        # "models/vae/wan2.2_vae" has no real suffix (pathlib would call ".2_vae" one): try the known ones.
        looked += [given.parent / (given.name + s) for s in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES]
        for p in looked[1:]:
            if p.exists():
                return check_regular_file(p, "VAE file")
    raise CheckpointNotFoundError(
        f"VAE checkpoint not found: {given}. Looked for: {', '.join(str(p) for p in looked)}. Pass the path of "
        "wan_2.1_vae.safetensors / wan2.2_vae.safetensors (ComfyUI: models/vae/) or the official Wan2.x_VAE.pth"
    )
