"""Load a Wan DiT checkpoint of any released layout into :class:`~chameleon_core.model.WanModel`.

Layouts (DESIGN.md section 7), told apart by their tensor names (:func:`detect_layout`):

- ``wan``: the original Wan names (``shared/reference/checkpoint-layouts/*.transformer.json``), one safetensors file
  or shards ``diffusion_pytorch_model-0000X-of-0000N.safetensors`` with a ``*.safetensors.index.json``;
- ``comfyui``: ComfyUI repackages, the Wan names under ``model.diffusion_model.``;
- ``comfyui-fp8``: ComfyUI "scaled fp8": float8_e4m3fn weights with a fp32 ``<name>.scale_weight`` beside each
  ``<name>.weight`` and a ``scaled_fp8`` marker; the real weight is ``weight.float() * scale_weight``
  (ComfyUI's ``comfy/ops.py``); ``.scale_input`` keys (static activation scales) do not change the weights and are
  ignored;
- ``diffusers``: ``WanTransformer3DModel`` names, optionally under ``transformer.``; renamed with the explicit table
  :data:`DIFFUSERS_TO_WAN`;
- ``training``: ``.pt`` files from Self-Forcing-style trainers (FashionChameleon, CausVid, LongLive) holding
  ``generator`` / ``generator_ema`` state dicts with a ``model.`` prefix and FSDP's ``_fsdp_wrapped_module.``
  anywhere in the name.

The architecture comes from the tensor shapes (:func:`infer_config`), so pruned, distilled and tiny models load as
well as the presets, which are recognised by name.

Memory: the model is built on the meta device and each tensor is read, converted to the compute dtype and moved to
the device on its own, so host RAM holds the converted model plus one tensor in flight (and one reusable read buffer
the size of the largest tensor), never two copies of the weights. Safetensors files are read with plain positioned
reads rather than ``safe_open``: safe_open maps the whole file, and every page it touches stays in the process's
resident set until the file is closed, which doubles the peak RSS of a load. ``.pt`` files are read with
``torch.load(mmap=True, weights_only=True)``; their mapped pages are clean page cache that the kernel reclaims under
pressure, while the converted copies are the only anonymous memory.

Nothing is ever unpickled beyond tensors and plain containers: ``torch.load`` always runs with ``weights_only=True``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from .config import HEAD_DIM, PRESETS, WanConfig, match_preset
from .model import WanModel

logger = logging.getLogger(__name__)

LAYOUTS = ("wan", "comfyui", "comfyui-fp8", "diffusers", "training")
"""Names returned by :func:`detect_layout`."""

COMPUTE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
"""Dtypes the model can run in; fp8 checkpoints are dequantized into one of these."""

DEFAULT_TEXT_LEN = 512
"""Prompt length of every released Wan; the checkpoint does not store it."""

COMFY_PREFIX = "model.diffusion_model."
TRAINING_PREFIX = "model."
DIFFUSERS_PREFIX = "transformer."
#: Module wrappers that insert a path component anywhere in a name: FSDP, activation checkpointing, torch.compile.
WRAPPER_TOKENS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
SCALED_FP8_MARKER = "scaled_fp8"
SCALE_WEIGHT = ".scale_weight"
SCALE_INPUT = ".scale_input"
TRAINING_KEYS = ("generator_ema", "generator")
"""Top-level entries of a training checkpoint, in the order they are preferred (the authors infer with the EMA)."""

#: diffusers ``WanTransformer3DModel`` module -> original Wan module, outside the blocks (verified against
#: diffusers 0.42.1). Parameter suffixes (``.weight`` / ``.bias``) carry over unchanged.
DIFFUSERS_TO_WAN: dict[str, str] = {
    "patch_embedding": "patch_embedding",
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
    "condition_embedder.time_proj": "time_projection.1",
    "proj_out": "head.head",
    "scale_shift_table": "head.modulation",
}

#: The same inside ``blocks.N.``. diffusers' ``norm2`` is the affine LayerNorm before cross-attention, which Wan
#: calls ``norm3``; the two non-affine norms have no parameters in either.
DIFFUSERS_TO_WAN_BLOCK: dict[str, str] = {
    "attn1.to_q": "self_attn.q",
    "attn1.to_k": "self_attn.k",
    "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn1.norm_q": "self_attn.norm_q",
    "attn1.norm_k": "self_attn.norm_k",
    "attn2.to_q": "cross_attn.q",
    "attn2.to_k": "cross_attn.k",
    "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o",
    "attn2.norm_q": "cross_attn.norm_q",
    "attn2.norm_k": "cross_attn.norm_k",
    "norm2": "norm3",
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
    "scale_shift_table": "modulation",
}

#: Name fragments of Wan variants this model does not implement -> what they are.
UNSUPPORTED_VARIANTS: dict[str, str] = {
    "condition_embedder.image_embedder.": "image-to-video (CLIP image embedder)",
    ".add_k_proj.": "image-to-video (image cross-attention)",
    ".add_v_proj.": "image-to-video (image cross-attention)",
    ".norm_added_k.": "image-to-video (image cross-attention)",
    "img_emb.": "image-to-video (CLIP image embedder)",
    ".k_img.": "image-to-video (image cross-attention)",
    ".v_img.": "image-to-video (image cross-attention)",
    ".norm_k_img.": "image-to-video (image cross-attention)",
    "vace_": "VACE (control blocks)",
}

_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")
_SHOW = 5  # names quoted in an error message


# ---------------------------------------------------------------------------------------------------------------
# Finding the files
# ---------------------------------------------------------------------------------------------------------------

_SAFETENSORS = (".safetensors",)
_TORCH = (".pt", ".pth", ".ckpt", ".bin")


def resolve_checkpoint_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files that make up a checkpoint: one file, or every shard named by an index json.

    ``path`` may be a ``.safetensors`` / ``.pt`` file, a ``*.safetensors.index.json``, or a directory holding one
    checkpoint (a Wan / diffusers model folder; a diffusers pipeline folder is searched in ``transformer/`` too).
    """
    p = Path(path).expanduser()
    if not p.exists():
        hint = f" (the folder {p.parent} exists; it holds {_listing(p.parent)})" if p.parent.is_dir() else ""
        raise FileNotFoundError(
            f"checkpoint not found: no file or folder at {p.resolve()}{hint}; check the path, or put the file in "
            "ComfyUI's models/diffusion_models folder"
        )
    if p.is_dir():
        return _resolve_dir(p)
    if p.name.endswith(".index.json"):
        return _shards_from_index(p)
    if p.suffix in _SAFETENSORS + _TORCH:
        return [p]
    raise ValueError(
        f"unsupported checkpoint file type {p.suffix!r}: {p}; pass a .safetensors file, a *.safetensors.index.json "
        f"of a sharded checkpoint, a training checkpoint ({', '.join(_TORCH)}), or the folder holding them"
    )


def _listing(folder: Path, limit: int = 8) -> str:
    names = sorted(x.name + ("/" if x.is_dir() else "") for x in folder.iterdir())
    if not names:
        return "nothing"
    return ", ".join(names[:limit]) + (f", ... ({len(names)} entries)" if len(names) > limit else "")


def _resolve_dir(folder: Path) -> list[Path]:
    searched = [folder] + ([folder / "transformer"] if (folder / "transformer").is_dir() else [])
    for d in searched:
        indexes = sorted(d.glob("*.safetensors.index.json"))
        if len(indexes) > 1:
            preferred = d / "diffusion_pytorch_model.safetensors.index.json"
            if preferred not in indexes:
                raise ValueError(
                    f"folder {d} holds several sharded checkpoints {[i.name for i in indexes]}; "
                    "pass the index json of the one to load"
                )
            indexes = [preferred]
        if indexes:
            return _shards_from_index(indexes[0])
        single = d / "diffusion_pytorch_model.safetensors"
        if single.is_file():
            return [single]
        for suffixes in (_SAFETENSORS, _TORCH):
            found = sorted(f for f in d.iterdir() if f.is_file() and f.suffix in suffixes)
            if len(found) == 1:
                return found
            if len(found) > 1:
                raise ValueError(
                    f"folder {d} holds several checkpoint files {[f.name for f in found]} and no index json; "
                    "pass the path of the file to load"
                )
    raise FileNotFoundError(
        f"no transformer checkpoint in {folder}: searched the folders {[str(d) for d in searched]} for a "
        "*.safetensors.index.json, diffusion_pytorch_model.safetensors, a single *.safetensors or a single "
        f"{'/'.join(_TORCH)} file; found {_listing(folder)}. Pass the checkpoint file itself"
    )


def _shards_from_index(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        names = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(
            f"{index} is not a sharded-checkpoint index ({type(e).__name__}: {e}); expected JSON with a "
            '"weight_map": {tensor name: shard file}. Re-download it, or pass a single checkpoint file'
        ) from None
    shards = [index.parent / n for n in names]
    missing = [s.name for s in shards if not s.is_file()]
    if missing:
        raise FileNotFoundError(
            f"index {index} names {len(shards)} shards but {len(missing)} are missing from {index.parent}: "
            f"{missing[:_SHOW]}; download every shard into the same folder"
        )
    return shards


# ---------------------------------------------------------------------------------------------------------------
# Reading tensors one at a time
# ---------------------------------------------------------------------------------------------------------------

_ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_MAX_HEADER = 100 * 2**20  # the format's own limit on the JSON header


@dataclass(frozen=True)
class _StEntry:
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    nbytes: int


def _read_safetensors_header(path: Path) -> tuple[dict[str, _StEntry], dict[str, str]]:
    """Parse a safetensors header and check that the file holds all the data it announces.

    Returns the tensors' entries and the file's ``__metadata__`` (string to string).
    """
    size = path.stat().st_size

    def corrupt(why: str) -> ValueError:
        return ValueError(
            f"safetensors file {path} is truncated or corrupt: {why}; re-download or re-copy the file (compare its "
            "size with the source)"
        )

    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise corrupt(f"it has {size} bytes, fewer than the 8-byte header length")
        n = int.from_bytes(head, "little")
        if n > _MAX_HEADER or 8 + n > size:
            raise corrupt(f"the header claims {n} bytes but the file has {size} bytes in all")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise corrupt(f"its header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise corrupt("its header is not a JSON object")
    data_start = 8 + n
    entries: dict[str, _StEntry] = {}
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise corrupt(f"its __metadata__ is not a JSON object: {metadata!r}")
    data_end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype_name, shape, (begin, end) = info["dtype"], tuple(int(s) for s in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise corrupt(f"header entry {name!r} is malformed: {info!r}") from None
        if dtype_name not in _ST_DTYPES:
            raise ValueError(
                f"tensor {name!r} in {path} has dtype {dtype_name!r}, which this loader does not read; supported: "
                f"{sorted(_ST_DTYPES)}. Convert the checkpoint to bf16 / fp16 / fp32 / scaled fp8 safetensors"
            )
        dtype = _ST_DTYPES[dtype_name]
        nbytes = math.prod(shape) * dtype.itemsize
        if end - begin != nbytes:
            raise corrupt(
                f"tensor {name!r} of shape {list(shape)} {dtype_name} needs {nbytes} bytes, the header gives it "
                f"{end - begin}"
            )
        entries[name] = _StEntry(path, dtype, shape, data_start + begin, nbytes)
        data_end = max(data_end, end)
    if data_start + data_end > size:
        raise corrupt(
            f"its header announces {data_end} bytes of tensor data after the {data_start}-byte header "
            f"({data_start + data_end} bytes in all), but the file has only {size} bytes"
        )
    return entries, {str(k): str(v) for k, v in metadata.items()}


class _TensorSource:
    """Named tensors of a checkpoint, read one at a time on request."""

    layout_hint: str | None = None  # set when the container itself tells the layout (training .pt)
    metadata: dict[str, str]  # the safetensors __metadata__ (empty for .pt)
    which: str | None = None  # the state dict used inside a training checkpoint

    def shapes(self) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def dtypes(self) -> dict[str, torch.dtype]:
        raise NotImplementedError

    def read(self, name: str, *, scratch: bool = False) -> tuple[torch.Tensor, bool]:
        """The tensor ``name`` on the CPU in its stored dtype, and whether the caller owns its memory.

        When not owned, it is a view of a scratch buffer that the next ``scratch`` read overwrites, or of a file
        mapping; the caller must copy it before keeping it. ``scratch=True`` allows the scratch buffer, for a
        tensor the caller converts into new memory anyway.
        """
        raise NotImplementedError

    def order(self, names: Iterable[str]) -> list[str]:
        """``names`` in the order that reads the files front to back."""
        return list(names)

    def close(self) -> None:
        pass


class _SafetensorsSource(_TensorSource):
    def __init__(self, files: Sequence[Path]) -> None:
        self.entries: dict[str, _StEntry] = {}
        self.metadata = {}
        for f in files:
            entries, metadata = _read_safetensors_header(f)
            self.metadata = {**metadata, **self.metadata}  # the first shard wins
            for name, entry in entries.items():
                if name in self.entries:
                    raise ValueError(
                        f"tensor {name!r} appears in two shards, {self.entries[name].file.name} and {f.name}; "
                        "the shards come from different checkpoints: download them again from one source"
                    )
                self.entries[name] = entry
        self._handles: dict[Path, object] = {}
        # One reusable read buffer for tensors that get converted: a fresh temporary per tensor fragments the heap
        # between the kept converted tensors, which measurably raised the peak RSS of a fp32 -> bf16 load.
        self._scratch: torch.Tensor | None = None

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: e.shape for k, e in self.entries.items()}

    def dtypes(self) -> dict[str, torch.dtype]:
        return {k: e.dtype for k, e in self.entries.items()}

    def order(self, names: Iterable[str]) -> list[str]:
        return sorted(names, key=lambda k: (str(self.entries[k].file), self.entries[k].start))

    def read(self, name: str, *, scratch: bool = False) -> tuple[torch.Tensor, bool]:
        e = self.entries[name]
        f = self._handles.get(e.file)
        if f is None:
            f = self._handles[e.file] = open(e.file, "rb")
        if scratch:
            if self._scratch is None:
                self._scratch = torch.empty(max(x.nbytes for x in self.entries.values()), dtype=torch.uint8)
            buf = self._scratch[: e.nbytes]
        else:
            buf = torch.empty(e.nbytes, dtype=torch.uint8)
        if e.nbytes:
            f.seek(e.start)  # type: ignore[attr-defined]
            got = f.readinto(memoryview(buf.numpy()))  # type: ignore[attr-defined]
            if got != e.nbytes:
                raise ValueError(
                    f"safetensors file {e.file} is truncated: tensor {name!r} needs {e.nbytes} bytes at offset "
                    f"{e.start}, read {got}; re-download or re-copy the file"
                )
        return buf.view(e.dtype).reshape(e.shape), not scratch

    def close(self) -> None:
        for f in self._handles.values():
            f.close()  # type: ignore[attr-defined]
        self._handles.clear()
        self._scratch = None


class _TorchSource(_TensorSource):
    def __init__(self, path: Path, which: str | None) -> None:
        obj = _torch_load(path)
        self.path = path
        self.metadata = {}
        self.tensors, self.layout_hint, self.which = _select_state_dict(obj, path, which)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(t.shape) for k, t in self.tensors.items()}

    def dtypes(self) -> dict[str, torch.dtype]:
        return {k: t.dtype for k, t in self.tensors.items()}

    def read(self, name: str, *, scratch: bool = False) -> tuple[torch.Tensor, bool]:
        # Popped so that a file read whole (legacy format, no mmap) frees as it goes.
        return self.tensors.pop(name), False

    def close(self) -> None:
        self.tensors.clear()


def _torch_load(path: Path) -> object:
    """``torch.load`` that never runs pickled code and turns its failures into errors saying what to do."""
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError as e:
        raise _refused_pickle(path, e) from None
    except RuntimeError as e:
        if "mmap can only be used" not in str(e):
            raise _corrupt_torch(path, e) from None
    # Files in the pre-1.6 (non-zip) format cannot be mapped; they are read whole into RAM.
    logger.warning("%s is in the legacy torch.save format, which cannot be memory-mapped; reading it whole", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise _refused_pickle(path, e) from None
    except RuntimeError as e:
        raise _corrupt_torch(path, e) from None


def _refused_pickle(path: Path, e: Exception) -> ValueError:
    detail = next((ln.strip() for ln in str(e).splitlines() if "Unsupported" in ln or "WeightsUnpickler" in ln), "")
    return ValueError(
        f"refusing to load {path}: it holds pickled Python objects, not only tensors and plain containers, and "
        f"unpickling them could run arbitrary code ({detail or 'weights_only=True rejected it'}). Re-save the "
        "weights as a plain state dict of tensors (torch.save({'generator_ema': model.state_dict()}, ...)) or as "
        "safetensors on a machine where you trust the file"
    )


def _corrupt_torch(path: Path, e: Exception) -> ValueError:
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    return ValueError(
        f"cannot read {path} as a torch checkpoint ({first}); the file is probably truncated or not a "
        "torch.save file: re-download or re-copy it"
    )


def _is_state_dict(x: object) -> bool:
    return isinstance(x, Mapping) and any(isinstance(v, torch.Tensor) for v in x.values())


def _select_state_dict(
    obj: object, path: Path, which: str | None
) -> tuple[dict[str, torch.Tensor], str | None, str | None]:
    """Pick the state dict inside a loaded ``.pt``: returns (tensors, layout hint, the entry used)."""
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{path} holds a {type(obj).__name__}, not a dict of tensors; expected a state dict or a training "
            "checkpoint with 'generator' / 'generator_ema' entries"
        )
    entries = [k for k, v in obj.items() if isinstance(k, str) and _is_state_dict(v)]
    top_level_tensors = any(isinstance(v, torch.Tensor) for v in obj.values())
    chosen: str | None = None
    if which is not None:
        if which not in entries:
            raise ValueError(
                f"which={which!r} is not a state dict in {path}; it holds the state dicts {entries} "
                f"(top-level keys {list(obj)[:8]}). Pick one of them, or leave which=None"
            )
        chosen = which
    else:
        chosen = next((k for k in TRAINING_KEYS + ("state_dict",) if k in entries), None)
        if chosen is None and not top_level_tensors and len(entries) == 1:
            chosen = entries[0]  # e.g. {"model": state_dict, "step": 1000}
        if chosen is None and not top_level_tensors and len(entries) > 1:
            raise ValueError(
                f"{path} holds several state dicts {entries} and none is a generator / generator_ema; "
                "pick one with which=..."
            )
        if chosen == "generator" and "generator_ema" in obj:
            logger.warning("%s: 'generator_ema' is empty; loading 'generator' instead", path)
    sd = obj[chosen] if chosen is not None else obj
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(
            f"{path} holds no tensors at its top level and no state dict entry; top-level keys: {list(obj)[:8]}. "
            "Expected a state dict, or a training checkpoint with 'generator' / 'generator_ema'"
        )
    hint = "training" if chosen in TRAINING_KEYS else None
    return tensors, hint, chosen


def _open(files: Sequence[Path], which: str | None) -> _TensorSource:
    if files[0].suffix in _TORCH:
        return _TorchSource(files[0], which)
    if which is not None:
        raise ValueError(
            f"which={which!r} picks a state dict inside a training checkpoint (.pt), but {files[0]} is a "
            "safetensors file with a single state dict; leave which=None"
        )
    return _SafetensorsSource(files)


def read_state_dict_shapes(path: str | os.PathLike[str], *, which: str | None = None) -> dict[str, tuple[int, ...]]:
    """Every tensor name of a checkpoint, as stored (prefixes included), with its shape; reads no weights."""
    source = _open(resolve_checkpoint_files(path), which)
    try:
        return source.shapes()
    finally:
        source.close()


def iter_checkpoint_tensors(
    path: str | os.PathLike[str], *, which: str | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(stored name, tensor)`` one at a time, in stored dtype on the CPU, in file order.

    Only the tensor being yielded is held (once the caller drops it, it is gone), so any checkpoint streams through
    with one tensor of extra memory. Works for every file :func:`resolve_checkpoint_files` accepts.
    """
    source = _open(resolve_checkpoint_files(path), which)
    try:
        for name in source.order(source.shapes()):
            t, owned = source.read(name)
            yield name, (t if owned else t.clone())
    finally:
        source.close()


# ---------------------------------------------------------------------------------------------------------------
# Layouts and names
# ---------------------------------------------------------------------------------------------------------------


def _strip_wrappers(name: str) -> str:
    for token in WRAPPER_TOKENS:
        name = name.replace(token, "")
    return name


def _is_wan_name(name: str) -> bool:
    # Only names no other Wan component uses: the umT5 encoder also has ``blocks.N.ffn``.
    top = ("patch_embedding.", "text_embedding.", "time_embedding.", "time_projection.", "head.head.")
    return name.startswith(top) or bool(re.match(r"blocks\.\d+\.(self_attn|cross_attn)\.", name))


def _is_diffusers_name(name: str) -> bool:
    return (
        name.startswith(("condition_embedder.", "proj_out."))
        or name == "scale_shift_table"
        or bool(re.match(r"blocks\.\d+\.(attn1|attn2|ffn\.net|scale_shift_table)", name))
    )


def _first(keys: Sequence[str], n: int = 8) -> str:
    return f"{list(keys[:n])}" + (f" ... ({len(keys)} keys)" if len(keys) > n else "")


def detect_layout(keys: Iterable[str]) -> str:
    """Which layout a list of tensor names is in: one of :data:`LAYOUTS`.

    Raises a ValueError that says so when the names belong to a Wan VAE or a text encoder rather than a transformer,
    and one that lists the first names when the layout is unknown.
    """
    raw = list(keys)
    if not raw:
        raise ValueError("the checkpoint holds no tensors; pass a Wan transformer checkpoint")
    if any(k in TRAINING_KEYS or k.startswith(tuple(t + "." for t in TRAINING_KEYS)) for k in raw):
        return "training"
    names = [_strip_wrappers(k) for k in raw]
    wrapped = names != raw
    scaled = any(k.endswith((SCALE_WEIGHT, SCALED_FP8_MARKER)) for k in names)
    comfy = [k[len(COMFY_PREFIX) :] for k in names if k.startswith(COMFY_PREFIX)]
    if comfy and any(_is_wan_name(k) for k in comfy):
        return "comfyui-fp8" if scaled else "comfyui"
    model = [k[len(TRAINING_PREFIX) :] for k in names if k.startswith(TRAINING_PREFIX)]
    if model and any(_is_wan_name(k) for k in model):
        return "training"
    bare = [k.removeprefix(DIFFUSERS_PREFIX) for k in names]
    if any(_is_diffusers_name(k) for k in bare):
        return "diffusers"
    if any(_is_wan_name(k) for k in names):
        if scaled:
            return "comfyui-fp8"
        return "training" if wrapped else "wan"
    raise _not_a_transformer(raw)


def _not_a_transformer(keys: Sequence[str]) -> ValueError:
    """The error for names that are no Wan DiT: says so for a VAE or a text encoder, else lists the first names."""
    names = [k.removeprefix("first_stage_model.").removeprefix("vae.") for k in keys]
    if any(k.startswith(("encoder.conv1.", "decoder.conv1.", "decoder.head.", "encoder.downsamples.")) for k in names):
        return ValueError(
            f"this is a VAE checkpoint (keys like {_first([k for k in keys if 'coder.' in k], 3)}), not a Wan "
            "transformer; load it with ComfyUI's VAE loader and pick the diffusion model (the DiT) here"
        )
    if any(
        k.startswith(("encoder.block.", "shared.", "token_embedding.", "encoder.embed_tokens."))
        or re.match(r"blocks\.\d+\.(attn|ffn\.gate)\.", k)
        for k in names
    ):
        return ValueError(
            f"this is a text-encoder checkpoint (umT5; keys like {_first(list(keys), 3)}), not a Wan transformer; "
            "load it with ComfyUI's CLIPLoader (type wan) and pick the diffusion model (the DiT) here"
        )
    return ValueError(
        f"unknown checkpoint layout: the tensor names match none of {list(LAYOUTS)}; first keys: {_first(list(keys))}. "
        "Pass a Wan DiT checkpoint (original Wan, ComfyUI repackage, diffusers WanTransformer3DModel, or a "
        "training .pt with generator / generator_ema)"
    )


def _diffusers_to_wan(name: str) -> str | None:
    """A diffusers name (no prefix) -> the original Wan name, or None when the table has no entry."""
    m = _BLOCK_RE.match(name)
    if m:
        table, head, rest = DIFFUSERS_TO_WAN_BLOCK, f"blocks.{m.group(1)}.", m.group(2)
    else:
        table, head, rest = DIFFUSERS_TO_WAN, "", name
    for module in sorted(table, key=len, reverse=True):
        if rest == module or rest.startswith(module + "."):
            return head + table[module] + rest[len(module) :]
    return None


@dataclass(frozen=True)
class _Entry:
    """Where one model tensor comes from."""

    raw: str
    scale: str | None = None  # the raw name of its scale_weight (scaled fp8)


@dataclass(frozen=True)
class _Renamed:
    entries: dict[str, _Entry]  # model name -> source
    unexpected: list[str]  # raw names that map to nothing


def _rename(keys: Iterable[str], layout: str) -> _Renamed:
    """Map raw tensor names to the model's names for a layout; refuse variants this model does not implement."""
    keys = list(keys)
    for k in keys:
        for fragment, what in UNSUPPORTED_VARIANTS.items():
            if fragment in "." + _strip_wrappers(k):
                raise ValueError(
                    f"unsupported Wan variant: {k!r} belongs to a {what} model. FashionChameleon runs the "
                    "text-to-video / TI2V transformer (Wan2.2-TI2V-5B, or Wan2.1-T2V for other students); "
                    "pass that checkpoint instead"
                )
    entries: dict[str, _Entry] = {}
    scales: dict[str, str] = {}
    unexpected: list[str] = []
    # An all-in-one ComfyUI checkpoint also carries its VAE and text encoders beside model.diffusion_model.
    comfy_prefixed = layout.startswith("comfyui") and any(_strip_wrappers(k).startswith(COMFY_PREFIX) for k in keys)
    others = 0
    for k in keys:
        name = _strip_wrappers(k)
        if comfy_prefixed and not name.startswith(COMFY_PREFIX):
            others += 1
            continue
        if layout == "training":
            name = name.removeprefix(TRAINING_PREFIX)
        elif layout in ("comfyui", "comfyui-fp8"):
            name = name.removeprefix(COMFY_PREFIX)
        elif layout == "diffusers":
            name = name.removeprefix(DIFFUSERS_PREFIX)
        if layout == "comfyui-fp8" and (name == SCALED_FP8_MARKER or name.endswith(SCALE_INPUT)):
            continue
        if layout == "comfyui-fp8" and name.endswith(SCALE_WEIGHT):
            scales[name[: -len(SCALE_WEIGHT)] + ".weight"] = k
            continue
        if layout == "diffusers":
            mapped = _diffusers_to_wan(name)
            if mapped is None:
                unexpected.append(k)
                continue
            name = mapped
        if name in entries:
            raise ValueError(
                f"two tensors in the checkpoint map to the same model weight {name!r}: {entries[name].raw!r} and "
                f"{k!r}; the file mixes two layouts. Re-export it with one set of names"
            )
        entries[name] = _Entry(k)
    for target, scale_key in scales.items():
        if target in entries:
            entries[target] = replace(entries[target], scale=scale_key)
        else:
            unexpected.append(scale_key)
    if others:
        logger.info("ignoring %d tensors outside %r (VAE / text encoders of an all-in-one file)", others, COMFY_PREFIX)
    return _Renamed(entries, unexpected)


# ---------------------------------------------------------------------------------------------------------------
# Architecture from shapes
# ---------------------------------------------------------------------------------------------------------------


def infer_config(shapes: Mapping[str, Sequence[int]], *, text_len: int | None = None) -> WanConfig:
    """A :class:`WanConfig` from tensor shapes in the original Wan names; named after the preset it matches.

    ``num_heads`` is ``dim / 128`` (every released Wan). ``text_len`` is not stored in a checkpoint: by default it
    is the matching preset's (512 for every released model) or 512 for a custom shape.
    """

    def shape(name: str, ndim: int) -> tuple[int, ...]:
        if name not in shapes:
            raise ValueError(
                f"cannot infer the architecture: the checkpoint has no {name!r}, which every Wan DiT has; "
                f"first keys: {_first(sorted(shapes))}. Pass a complete Wan transformer checkpoint"
            )
        s = tuple(int(x) for x in shapes[name])
        if len(s) != ndim:
            raise ValueError(f"shape mismatch for {name!r}: expected a {ndim}-d tensor, got shape {list(s)}")
        return s

    dim, in_dim, *patch = shape("patch_embedding.weight", 5)
    ffn_dim, _ = shape("blocks.0.ffn.0.weight", 2)
    _, text_dim = shape("text_embedding.0.weight", 2)
    _, freq_dim = shape("time_embedding.0.weight", 2)
    head_out, _ = shape("head.head.weight", 2)
    layers = sorted({int(m.group(1)) for k in shapes if (m := _BLOCK_RE.match(k))})
    if layers != list(range(len(layers))):
        gaps = sorted(set(range(layers[-1] + 1)) - set(layers))
        raise ValueError(
            f"the checkpoint's blocks are not numbered 0..N-1: found {len(layers)} blocks up to {layers[-1]}, "
            f"missing blocks {gaps[:_SHOW]}; the file is incomplete (a missing shard?). Download it again"
        )
    if dim % HEAD_DIM:
        raise ValueError(
            f"cannot infer the number of heads: dim={dim} is not a multiple of the head dim {HEAD_DIM} that every "
            "released Wan uses; this loader only reads Wan DiTs with 128-wide heads"
        )
    n_patch = math.prod(patch)
    if head_out % n_patch:
        raise ValueError(
            f"shape mismatch for 'head.head.weight': its {head_out} rows are not a multiple of the patch volume "
            f"{n_patch} (patch {tuple(patch)}); the checkpoint is inconsistent"
        )
    config = WanConfig(
        dim=dim,
        ffn_dim=ffn_dim,
        num_heads=dim // HEAD_DIM,
        num_layers=len(layers),
        in_dim=in_dim,
        out_dim=head_out // n_patch,
        text_dim=text_dim,
        freq_dim=freq_dim,
        text_len=DEFAULT_TEXT_LEN,
        patch_size=tuple(patch),
        qk_norm="blocks.0.self_attn.norm_q.weight" in shapes,
        cross_attn_norm="blocks.0.norm3.weight" in shapes,
    )
    config = match_preset(config)
    if text_len is None:
        text_len = PRESETS[config.name].text_len if config.name in PRESETS else DEFAULT_TEXT_LEN
    return replace(config, text_len=text_len)


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint holds, read from its headers only (no weights)."""

    files: tuple[Path, ...]
    """The files read (several for a sharded checkpoint)."""
    layout: str
    """One of :data:`LAYOUTS`."""
    config: WanConfig
    """The architecture, named after its preset or ``custom``."""
    stored_dtype: torch.dtype
    """The dtype holding most of the weights (float8_e4m3fn for scaled fp8)."""
    num_params: int
    """Parameters of the model built from it."""
    state_dict: str | None = None
    """For a training checkpoint: the entry loaded (``generator_ema`` or ``generator``)."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    """The safetensors ``__metadata__`` (of the first shard); empty for ``.pt`` files."""


@dataclass(frozen=True)
class _Plan:
    info: CheckpointInfo
    renamed: _Renamed


def _plan(source: _TensorSource, files: Sequence[Path], text_len: int | None) -> _Plan:
    """Check names and shapes against the inferred architecture before a byte of weights is read."""
    shapes = source.shapes()
    layout = detect_layout(list(shapes))
    if source.layout_hint == "training" and layout == "wan":
        layout = "training"  # a generator state dict saved without the wrapper's prefix
    renamed = _rename(shapes, layout)
    model_shapes = {name: shapes[e.raw] for name, e in renamed.entries.items()}
    config = infer_config(model_shapes, text_len=text_len)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in WanModel(config).state_dict().items()}
    missing = sorted(set(expected) - set(model_shapes))
    unexpected = sorted([renamed.entries[k].raw for k in set(model_shapes) - set(expected)] + renamed.unexpected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys the model needs: {missing[:_SHOW]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys the model does not have: {unexpected[:_SHOW]}")
        raise ValueError(
            f"checkpoint does not match a Wan DiT of the shape it implies (layout {layout}, {config.name}, "
            f"dim={config.dim}, {config.num_layers} layers): {'; '.join(parts)}. The file may be incomplete, from a "
            "different model family, or carry extra modules (LoRA, adapters); pass a plain Wan transformer checkpoint"
        )
    for name, want in expected.items():
        got = tuple(model_shapes[name])
        if got != want:
            raw = renamed.entries[name].raw
            stored = f" (stored as {raw!r})" if raw != name else ""
            raise ValueError(
                f"shape mismatch for {name!r}{stored}: expected {list(want)} for the architecture inferred from the "
                f"other tensors ({config.name}, dim={config.dim}, ffn_dim={config.ffn_dim}), got {list(got)}; "
                "the checkpoint is corrupt or mixes two models"
            )
    dtypes = source.dtypes()
    counts: Counter[torch.dtype] = Counter()
    for e in renamed.entries.values():
        counts[dtypes[e.raw]] += math.prod(shapes[e.raw])
    info = CheckpointInfo(
        files=tuple(files),
        layout=layout,
        config=config,
        stored_dtype=counts.most_common(1)[0][0],
        num_params=sum(math.prod(s) for s in expected.values()),
        state_dict=source.which,
        metadata=dict(source.metadata),
    )
    return _Plan(info, renamed)


def inspect_checkpoint(
    path: str | os.PathLike[str], *, which: str | None = None, text_len: int | None = None
) -> CheckpointInfo:
    """Layout, architecture and stored dtype of a checkpoint, with every name and shape checked; reads no weights."""
    files = resolve_checkpoint_files(path)
    source = _open(files, which)
    try:
        return _plan(source, files, text_len).info
    finally:
        source.close()


def _check_dtype(dtype: torch.dtype) -> None:
    if not isinstance(dtype, torch.dtype):
        raise TypeError(
            f"dtype must be a torch.dtype (one of {[str(d) for d in COMPUTE_DTYPES]}), got {dtype!r} of type "
            f"{type(dtype).__name__}; pass e.g. dtype=torch.bfloat16"
        )
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(
            f"dtype must be one of {[str(d) for d in COMPUTE_DTYPES]} (the compute dtype; fp8 checkpoints are "
            f"dequantized into it), got {dtype!r}; use torch.bfloat16 on GPU or torch.float32 on CPU"
        )


def _dequantize(weight: torch.Tensor, scale: torch.Tensor, name: str) -> torch.Tensor:
    """ComfyUI scaled fp8: the real weight is ``weight.float() * scale_weight`` (a scalar or one per output row)."""
    scale = scale.float()
    if scale.numel() == 1:
        scale = scale.reshape(())
    elif scale.numel() == weight.shape[0]:
        scale = scale.reshape(-1, *([1] * (weight.ndim - 1)))
    else:
        raise ValueError(
            f"scale_weight of {name!r} has shape {list(scale.shape)}, which fits neither a scalar nor one scale per "
            f"output row of the weight {list(weight.shape)}; the scaled-fp8 file is malformed"
        )
    return weight.float() * scale


def _iter_converted(
    source: _TensorSource, renamed: _Renamed, dtype: torch.dtype, device: torch.device
) -> Iterator[tuple[str, torch.Tensor]]:
    raw_to_name = {e.raw: name for name, e in renamed.entries.items()}
    dtypes = source.dtypes()
    for raw in source.order(raw_to_name):
        name = raw_to_name[raw]
        entry = renamed.entries[name]
        converted = entry.scale is not None or dtypes[raw] != dtype or device.type != "cpu"
        scale = source.read(entry.scale)[0] if entry.scale is not None else None
        stored, owned = source.read(raw, scratch=converted)
        t = stored.to(device)
        if scale is not None:
            t = _dequantize(t, scale.to(device), name)
        # fp8 has no direct conversion kernels to half types on every backend; fp32 holds it exactly.
        if t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
            t = t.float()
        t = t.to(dtype)
        if not owned and t.data_ptr() == stored.data_ptr():
            # Never keep a view of a scratch buffer, or of a file mapping: that would crash the process (SIGBUS)
            # if a trainer rewrote the file in place.
            t = t.clone(memory_format=torch.contiguous_format)
        yield name, t.contiguous()


def load_transformer(
    path: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: torch.device | str = "cpu",
    which: str | None = None,
    text_len: int | None = None,
) -> WanModel:
    """Load a Wan DiT from any supported layout (see the module docstring) into ``dtype`` on ``device``.

    ``path``: a checkpoint file, a sharded checkpoint's index json, or the folder holding either. ``which``: for a
    training ``.pt``, the state dict to load (default: ``generator_ema`` if present, else ``generator``).
    ``text_len``: prompt length the model pads to (default: the preset's, 512 for every released Wan).

    Returns the model in eval mode with ``requires_grad`` off (turn it on to train). Raises FileNotFoundError for a
    missing path and ValueError for a file that is not a usable Wan transformer, each saying what to do.
    """
    _check_dtype(dtype)
    device = torch.device(device)
    files = resolve_checkpoint_files(path)
    source = _open(files, which)
    try:
        plan = _plan(source, files, text_len)
        info = plan.info
        logger.info(
            "loading %s: layout %s%s, %s (dim %d, %d layers, %s params), stored %s -> %s on %s",
            files[0] if len(files) == 1 else f"{files[0].parent} ({len(files)} shards)",
            info.layout,
            f" [{info.state_dict}]" if info.state_dict else "",
            info.config.name,
            info.config.dim,
            info.config.num_layers,
            f"{info.num_params / 1e9:.2f}B" if info.num_params >= 1e8 else f"{info.num_params / 1e6:.1f}M",
            info.stored_dtype,
            dtype,
            device,
        )
        with torch.device("meta"):
            model = WanModel(info.config)
        state = dict(_iter_converted(source, plan.renamed, dtype, device))
    finally:
        source.close()
    model.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # only a model change (a buffer outside the state dict) can cause this; name it for the developer
        raise RuntimeError(f"WanModel tensors not covered by its state dict stayed on the meta device: {left[:_SHOW]}")
    return model.eval().requires_grad_(False)


KIND_METADATA_KEY = "fashionchameleon.kind"
"""Safetensors metadata naming a checkpoint's role: ``student`` (causal, few-step) or ``teacher`` (bidirectional)."""
STUDENT_NAME_HINTS = ("student", "causal", "self_forcing", "self-forcing", "selfforcing", "causvid", "longlive",
                      "dmd", "stream")
"""File-name fragments of the public causal students (Self-Forcing, CausVid, LongLive) and of our own."""


def checkpoint_kind(path: str | os.PathLike[str]) -> str:
    """``student`` or ``teacher`` for a transformer checkpoint; raises ValueError for anything else (a VAE, ...).

    Both roles share one architecture, so the role comes from, in order: the ``fashionchameleon.kind`` metadata;
    a training ``.pt`` (``generator`` / ``generator_ema``: the distillation trainers' causal generator); a file name
    containing one of :data:`STUDENT_NAME_HINTS`; otherwise ``teacher`` (plain Wan releases are bidirectional).
    """
    info = inspect_checkpoint(path)
    kind = info.metadata.get(KIND_METADATA_KEY)
    if kind is not None:
        if kind not in ("student", "teacher"):
            raise ValueError(
                f"{info.files[0]}: metadata {KIND_METADATA_KEY}={kind!r} is neither 'student' nor 'teacher'; fix "
                "the metadata when writing the file"
            )
        return kind
    if info.layout == "training":
        return "student"
    name = Path(path).name.lower()
    return "student" if any(h in name for h in STUDENT_NAME_HINTS) else "teacher"
