"""One way to read and write the tensors of a checkpoint file: safetensors and weights-only torch ``.pt``.

Reading goes through a :class:`TensorSource`: names, shapes and dtypes first (from headers only), then one tensor at
a time on request, converted straight into the memory the caller keeps (:func:`read_as`). So a load holds the
converted weights plus one tensor in flight (and one reusable read buffer the size of the largest tensor), never two
copies of the weights.

- Safetensors files are parsed here (the format: an 8-byte little-endian header length, a JSON header naming each
  tensor's dtype, shape and byte range, then the raw data) and read with plain positioned reads rather than
  ``safe_open``: safe_open maps the whole file, and every page it touches stays in the process's resident set until
  the file is closed, which doubles the peak RSS of a load.
- ``.pt`` files are read with ``torch.load(mmap=True, weights_only=True)``: never unpickling code. Their mapped
  pages are clean page cache that the kernel reclaims under pressure, while the converted copies are the only
  anonymous memory.
- An in-memory state dict (ComfyUI's VAE, say) is a source too, so one code path builds every model.

Writing (:func:`write_safetensors`) streams tensor by tensor as well, converting each one on the way out, so an
export never holds a second copy of the model.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CheckpointError, check_regular_file, first_line
from .files import SHOW, is_torch_file

logger = logging.getLogger(__name__)

SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
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
"""Safetensors dtype names this package reads and writes."""
_DTYPE_NAMES = {v: k for k, v in SAFETENSORS_DTYPES.items()}
_MAX_HEADER = 100 * 2**20  # the format's own limit on the JSON header
_FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)


def first_names(keys: Iterable[str], n: int = 8) -> str:
    """The first ``n`` of ``keys`` (sorted as given), with the total when there are more: for error messages."""
    keys = list(keys)
    return f"{keys[:n]}" + (f" ... ({len(keys)} keys)" if len(keys) > n else "")


# ---------------------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------------------


class TensorSource:
    """Named tensors of a checkpoint, read one at a time on request. Use as a context manager, or call close()."""

    description: str
    """What the tensors come from (a path, or "the state dict"), for error messages."""
    metadata: dict[str, str]
    """The safetensors ``__metadata__`` (the first shard's); for a ``.pt``, its plain top-level entries as strings."""
    which: str | None = None
    """The entry of a ``.pt`` whose state dict is read (``generator_ema`` ...), or None for a top-level one."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], dtypes: dict[str, torch.dtype]) -> None:
        self._shapes, self._dtypes = shapes, dtypes

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Stored name -> shape, read from headers only."""
        return self._shapes

    def dtypes(self) -> dict[str, torch.dtype]:
        """Stored name -> stored dtype."""
        return self._dtypes

    def read(self, name: str, *, scratch: bool = False) -> tuple[torch.Tensor, bool]:
        """The tensor ``name`` on the CPU in its stored dtype, and whether the caller owns its memory.

        When not owned, it is a view of a scratch buffer that the next ``scratch`` read overwrites, or of a file
        mapping; the caller must copy it before keeping it (:func:`read_as` does). ``scratch=True`` allows the
        scratch buffer, for a tensor the caller converts into new memory anyway.
        """
        raise NotImplementedError

    def order(self, names: Iterable[str]) -> list[str]:
        """``names`` in the order that reads the files front to back."""
        return list(names)

    def close(self) -> None:
        pass

    def __enter__(self) -> TensorSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class _StEntry:
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    nbytes: int


def read_safetensors_header(path: Path) -> tuple[dict[str, _StEntry], dict[str, str]]:
    """Parse a safetensors header and check that the file holds all the data it announces.

    Returns the tensors' entries and the file's ``__metadata__`` (string to string).
    """
    size = check_regular_file(path).stat().st_size

    def corrupt(why: str) -> CheckpointError:
        return CheckpointError(
            f"safetensors file {path} is truncated or corrupt (or not a safetensors file): {why}; re-download or re-copy "
            "the file (compare its size with the source)"
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
        if dtype_name not in SAFETENSORS_DTYPES:
            raise CheckpointError(
                f"tensor {name!r} in {path} has dtype {dtype_name!r}, which this loader does not read; supported: "
                f"{sorted(SAFETENSORS_DTYPES)}. Convert the checkpoint to bf16 / fp16 / fp32 / scaled fp8 safetensors"
            )
        dtype = SAFETENSORS_DTYPES[dtype_name]
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


class SafetensorsSource(TensorSource):
    """One safetensors file, or the shards of one checkpoint, read with positioned reads (see the module docstring)."""

    def __init__(self, files: Sequence[Path]) -> None:
        self.description = str(files[0]) if len(files) == 1 else f"{files[0].parent} ({len(files)} shards)"
        self.entries: dict[str, _StEntry] = {}
        self.metadata = {}
        for f in files:
            entries, metadata = read_safetensors_header(f)
            self.metadata = {**metadata, **self.metadata}  # the first shard wins
            for name, entry in entries.items():
                if name in self.entries:
                    raise CheckpointError(
                        f"tensor {name!r} appears in two shards, {self.entries[name].file.name} and {f.name}; "
                        "the shards come from different checkpoints: download them again from one source"
                    )
                self.entries[name] = entry
        super().__init__({k: e.shape for k, e in self.entries.items()}, {k: e.dtype for k, e in self.entries.items()})
        self._handles: dict[Path, object] = {}
        # One reusable read buffer for tensors that get converted: a fresh temporary per tensor fragments the heap
        # between the kept converted tensors, which measurably raised the peak RSS of a fp32 -> bf16 load.
        self._scratch: torch.Tensor | None = None

    def order(self, names: Iterable[str]) -> list[str]:
        return sorted(names, key=lambda k: (str(self.entries[k].file), self.entries[k].start))

    def file_of(self, name: str) -> Path:
        """The file (shard) holding tensor ``name``."""
        return self.entries[name].file

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
                raise CheckpointError(
                    f"safetensors file {e.file} is truncated: tensor {name!r} needs {e.nbytes} bytes at offset "
                    f"{e.start}, read {got}; re-download or re-copy the file"
                )
        return buf.view(e.dtype).reshape(e.shape), not scratch

    def close(self) -> None:
        for f in self._handles.values():
            f.close()  # type: ignore[attr-defined]
        self._handles.clear()
        self._scratch = None


class StateDictSource(TensorSource):
    """Tensors already in memory; reading them copies nothing."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], description: str = "the state dict") -> None:
        self.description = description
        self.metadata = {}
        self.tensors = {k: v for k, v in tensors.items() if isinstance(v, torch.Tensor)}
        super().__init__(
            {k: tuple(t.shape) for k, t in self.tensors.items()}, {k: t.dtype for k, t in self.tensors.items()}
        )

    def read(self, name: str, *, scratch: bool = False) -> tuple[torch.Tensor, bool]:
        return self.tensors[name], True


class TorchSource(StateDictSource):
    """The state dict inside a ``.pt`` file, loaded weights-only and memory-mapped (see :func:`torch_load`)."""

    def __init__(self, path: Path, which: str | None, preferred: Sequence[str], expected: str,
                 choose: str = "pick one with which=...") -> None:
        obj = torch_load(path)
        tensors, self.which = select_state_dict(obj, path, which, preferred, expected, choose)
        super().__init__(tensors, str(path))
        # A .pt has no header: its plain top-level entries (LongLive's merged file: checkpoint_format, model_name)
        # stand in for the metadata, as strings.
        self.metadata = {str(k): str(v) for k, v in obj.items() if isinstance(v, (str, int, float, bool))}

    def read(self, name: str, *, scratch: bool = False) -> tuple[torch.Tensor, bool]:
        # Popped so that a file read whole (legacy format, no mmap) frees as it goes; a mapped tensor is not owned.
        return self.tensors.pop(name), False

    def close(self) -> None:
        self.tensors.clear()


def open_source(
    files: Sequence[Path], which: str | None = None, *, preferred: Sequence[str] = (), expected: str = "a state dict",
    choose: str = "pick one with which=...",
) -> TensorSource:
    """A source over the files of one checkpoint (one ``.pt``, or one or more safetensors shards).

    ``which`` picks a state dict inside a ``.pt``; otherwise the first of ``preferred`` present is used, else the
    top-level tensors or the only nested state dict. ``expected`` describes the wanted content in error messages,
    ``choose`` the fix when a ``.pt`` holds several state dicts and none is preferred (a loader without ``which=``
    says what to pass instead).
    """
    if is_torch_file(files[0]):
        return TorchSource(files[0], which, preferred, expected, choose)
    if which is not None:
        raise CheckpointError(
            f"which={which!r} picks a state dict inside a training checkpoint (.pt), but {files[0]} is a "
            "safetensors file with a single state dict; leave which=None"
        )
    return SafetensorsSource(files)


# ---------------------------------------------------------------------------------------------------------------
# torch .pt files
# ---------------------------------------------------------------------------------------------------------------


_ZIP_MAGIC = b"PK\x03\x04"
"""torch.save's format since PyTorch 1.6 is a zip archive."""
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
"""The pre-1.6 format opens with a pickled magic number (protocol 2, long 0x1950a86a20f9469cfc6c)."""


def sniff_torch_file(path: Path) -> str:
    """``zip`` or ``legacy`` for a file that torch.save wrote; raises :class:`CheckpointError` for anything else.

    Looks at the first bytes only, so an empty file, a text file or random bytes get a clear message instead of
    torch.load's EOFError / KeyError / "unpickling" errors (which would wrongly call random bytes a malicious pickle).
    """
    check_regular_file(path)
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_MAGIC))
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if head == _LEGACY_MAGIC:
        return "legacy"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "legacy"  # a bare pickle: torch.load(weights_only=True) refuses any code in it, with the reason
    fix = "re-download or re-copy it, or pass the real checkpoint (.safetensors, or a .pt written by torch.save)"
    if not head:
        raise CheckpointError(f"{path} is empty (0 bytes), not a PyTorch checkpoint; the copy failed or was cut: {fix}")
    text = head.isascii() and all(32 <= b < 127 or b in b"\t\r\n" for b in head)
    what = "text" if text else "bytes"
    raise CheckpointError(
        f"{path} is not a PyTorch checkpoint or is corrupt: it starts with the {what} {head[:12]!r}, but a file "
        f"written by torch.save starts with a zip header {_ZIP_MAGIC!r} (or the legacy pickle magic); {fix}"
    )


def torch_load(path: Path) -> object:
    """``torch.load`` that never runs pickled code and turns its failures into errors saying what to do."""
    if sniff_torch_file(path) == "zip":
        try:
            return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except pickle.UnpicklingError as e:
            if "Unsupported" in str(e) or "GLOBAL" in str(e):
                raise _refused_pickle(path, e) from None
            raise _corrupt_torch(path, e) from None
        except Exception as e:  # noqa: BLE001 -- torch raises RuntimeError, KeyError, ... for a damaged archive
            raise _corrupt_torch(path, e) from None
    # Files in the pre-1.6 (non-zip) format cannot be mapped; they are read whole into RAM.
    logger.warning("%s is in the legacy torch.save format, which cannot be memory-mapped; reading it whole", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported" in str(e) or "GLOBAL" in str(e):
            raise _refused_pickle(path, e) from None
        raise _corrupt_torch(path, e) from None
    except Exception as e:  # noqa: BLE001
        raise _corrupt_torch(path, e) from None


def _refused_pickle(path: Path, e: Exception) -> CheckpointError:
    detail = next((ln.strip() for ln in str(e).splitlines()
                   if ("Unsupported" in ln or "WeightsUnpickler" in ln) and "weights_only" not in ln), "")  # fmt: skip
    return CheckpointError(
        f"refusing to load {path}: it holds pickled Python objects, not only tensors and plain containers, and "
        "unpickling them could run arbitrary code, so it is read with torch.load(weights_only=True), which rejected "
        f"it ({detail or 'no detail given'}). Re-save the weights as a plain state dict of tensors "
        "(torch.save(model.state_dict(), ...)) or as safetensors on a machine where you trust the file"
    )


def _corrupt_torch(path: Path, e: Exception) -> CheckpointError:
    return CheckpointError(
        f"cannot read {path} as a PyTorch checkpoint ({type(e).__name__}: {first_line(e)}); the file is truncated "
        "or damaged (corrupt): re-download or re-copy it"
    )


def _is_state_dict(x: object) -> bool:
    return isinstance(x, Mapping) and any(isinstance(v, torch.Tensor) for v in x.values())


def select_state_dict(
    obj: object, path: Path, which: str | None, preferred: Sequence[str], expected: str,
    choose: str = "pick one with which=...",
) -> tuple[dict[str, torch.Tensor], str | None]:
    """Pick the state dict inside a loaded ``.pt``: returns (its tensors, the entry used or None for top level)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a dict of tensors; expected {expected}")
    entries = [k for k, v in obj.items() if isinstance(k, str) and _is_state_dict(v)]
    top_level_tensors = any(isinstance(v, torch.Tensor) for v in obj.values())
    chosen: str | None = None
    if which is not None:
        if which not in entries:
            raise CheckpointError(
                f"which={which!r} is not a state dict in {path}; it holds the state dicts {entries} "
                f"(top-level keys {list(obj)[:8]}). Pick one of them, or leave which=None"
            )
        chosen = which
    else:
        chosen = next((k for k in preferred if k in entries), None)
        if chosen is None and not top_level_tensors and len(entries) == 1:
            chosen = entries[0]  # e.g. {"model": state_dict, "step": 1000}
        if chosen is None and not top_level_tensors and len(entries) > 1:
            raise CheckpointError(
                f"{path} holds several state dicts {entries} and none of them is one of {list(preferred)}; {choose}"
            )
        skipped = [k for k in preferred[: list(preferred).index(chosen)] if k in obj] if chosen in preferred else []
        if skipped:
            logger.warning("%s: %s holds no tensors; loading %r instead", path, skipped, chosen)
    sd = obj[chosen] if chosen is not None else obj
    tensors = {str(k): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(
            f"{path} holds no tensors at its top level and no state dict entry; top-level keys: {list(obj)[:8]}. "
            f"Expected {expected}"
        )
    return tensors, chosen


# ---------------------------------------------------------------------------------------------------------------
# Reading into owned memory
# ---------------------------------------------------------------------------------------------------------------


def read_as(
    source: TensorSource,
    name: str,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """The tensor ``name`` moved to ``device``, passed through ``transform`` and cast to ``dtype``, in memory the
    caller owns. ``None`` keeps the stored device / dtype; with no change, an in-memory tensor is returned as is."""
    stored_dtype = source.dtypes()[name]
    converts = (
        transform is not None
        or (dtype is not None and dtype != stored_dtype)
        or (device is not None and device.type != "cpu")
    )
    stored, owned = source.read(name, scratch=converts)
    t = stored if device is None else stored.to(device)
    if transform is not None:
        t = transform(t)
    if dtype is not None and t.dtype != dtype:
        # fp8 has no direct conversion kernels to half types on every backend; fp32 holds it exactly.
        if t.dtype in _FP8:
            t = t.float()
        t = t.to(dtype)
    if not owned and t.data_ptr() == stored.data_ptr():
        # Never keep a view of a scratch buffer, or of a file mapping: that would crash the process (SIGBUS)
        # if a trainer rewrote the file in place.
        t = t.clone(memory_format=torch.contiguous_format)
    return t.contiguous()


class FiniteCheck:
    """Collects whether each loaded floating tensor is all finite, without a host sync per tensor; :meth:`check`
    syncs once and raises :class:`CheckpointError` naming the first tensor holding NaN/inf.

    A damaged weight (one NaN tensor in a VAE decoder) otherwise gives an all-black video and no error.
    """

    def __init__(self) -> None:
        self._names: list[str] = []
        self._flags: list[torch.Tensor] = []

    def add(self, name: str, t: torch.Tensor) -> None:
        if t.is_floating_point() and t.numel():
            self._names.append(name)
            # max / min propagate NaN and reach inf: no temporary the size of the tensor (the load's peak memory)
            self._flags.append(torch.isfinite(torch.stack([t.amax(), t.amin()])).all())

    def check(self, description: str, file_of: Callable[[str], object] | None = None) -> None:
        """Raise if any tensor added holds NaN/inf; ``file_of(name)`` names the file of a tensor (shards)."""
        if not self._flags:
            return
        devices = {f.device for f in self._flags}
        flags = torch.stack([f.to("cpu") for f in self._flags]) if len(devices) > 1 else torch.stack(self._flags)
        bad = (~flags).nonzero().flatten().tolist()  # the one host sync
        if bad:
            names = [self._names[i] for i in bad]
            where = f" (in {file_of(names[0])})" if file_of is not None else ""
            raise CheckpointError(
                f"{description} holds NaN/inf values in {len(names)} tensor(s), first {names[:SHOW]}{where}; the file is "
                "damaged (a broken download, a bad conversion, or a training run that diverged): re-download it or "
                "use another checkpoint"
            )


# ---------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------


def write_safetensors(
    path: Path,
    tensors: Mapping[str, torch.Tensor],
    *,
    metadata: Mapping[str, str] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``tensors`` (floating ones cast to ``dtype`` if given) as one safetensors file; returns ``path``.

    Tensors are converted and written one at a time, so the export costs one tensor of extra memory. The file is
    written beside ``path`` and renamed into place at the end: an interrupted export never leaves a truncated file
    under the real name.
    """
    if sys.byteorder != "little":
        raise RuntimeError(f"safetensors stores little-endian data; this machine is {sys.byteorder}-endian")
    meta = dict(metadata or {})
    bad = {k: v for k, v in meta.items() if not isinstance(k, str) or not isinstance(v, str)}
    if bad:
        raise TypeError(
            f"safetensors metadata maps strings to strings; got non-string entries {dict(list(bad.items())[:SHOW])}. "
            "Convert the values with str() (or json.dumps for structures)"
        )
    header: dict[str, object] = {"__metadata__": meta} if meta else {}
    offset = 0
    for name, t in tensors.items():
        if type(t).__name__ == "DTensor":
            raise CheckpointError(
                f"tensor {name!r} is a sharded DTensor; gather a full state dict first (e.g. FSDP's "
                "get_model_state_dict(..., options=StateDictOptions(full_state_dict=True, cpu_offload=True)))"
            )
        out_dtype = dtype if dtype is not None and t.is_floating_point() else t.dtype
        if out_dtype not in _DTYPE_NAMES:
            raise CheckpointError(
                f"tensor {name!r} has dtype {out_dtype}, which safetensors files here do not hold; supported: "
                f"{sorted(str(d) for d in _DTYPE_NAMES)}. Cast it before saving"
            )
        nbytes = t.numel() * out_dtype.itemsize
        header[name] = {
            "dtype": _DTYPE_NAMES[out_dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format pads the header so the data starts 8-byte aligned
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "wb") as f:
            f.write(len(blob).to_bytes(8, "little"))
            f.write(blob)
            for name, t in tensors.items():
                t = t.detach().to("cpu")
                if dtype is not None and t.is_floating_point():
                    t = t.to(dtype)
                f.write(memoryview(t.contiguous().reshape(-1).view(torch.uint8).numpy()))
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    logger.info("wrote %d tensors (%.1f MB) to %s", len(tensors), offset / 1e6, path)
    return path
