"""The one error type of every load path: checkpoints (transformer, VAE), prompt embeddings and the umT5 folder.

:class:`CheckpointError` subclasses ValueError, so callers that catch ValueError (the nodes, the command line) keep
catching it; :class:`CheckpointNotFoundError` is also a FileNotFoundError, for callers that tell a missing file
apart. Every message names the file, what is wrong with it and the fix. No message ever suggests
``weights_only=False``: that would unpickle code from the file.

:func:`check_regular_file` runs before any file is opened: a FIFO, a socket or a device named ``.safetensors``
would otherwise block the loader forever (opening a FIFO for reading waits for a writer).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import stat
import struct
from collections.abc import Iterator
from pathlib import Path

import torch


class CheckpointError(ValueError):
    """A weight or embedding file cannot be used; the message says which file, what is wrong and the fix."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The file (or folder) does not exist; the message lists where it was looked for."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a folder")):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"


def check_regular_file(path: str | os.PathLike[str], what: str = "checkpoint file",
                       fix: str = "pass the path of the real weight file") -> Path:
    """``path`` if it is a regular file (symlinks followed); raises :class:`CheckpointError` otherwise (its
    :class:`CheckpointNotFoundError` for a missing path), ending with ``fix``.

    Uses ``os.stat`` only, which never blocks on a FIFO, unlike ``open``.
    """
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"{what} {p} does not exist; check the path") from None
    except OSError as e:
        raise CheckpointError(f"cannot access the {what} {p} ({e.strerror}); check its permissions") from None
    if not stat.S_ISREG(mode):
        raise CheckpointError(
            f"{what} {p} is {_kind(mode)}, not a regular file, so it is not read (reading a pipe or device could "
            f"block forever or never end); {fix}"
        )
    return p


def check_device(device: object, what: str = "the model") -> torch.device:
    """``device`` as a torch.device that this machine has; raises :class:`CheckpointError` naming the fix."""
    try:
        dev = torch.device(device)  # type: ignore[arg-type]
    except (RuntimeError, TypeError) as e:
        raise CheckpointError(f"device {device!r} for {what} is not a device ({e}); use 'cuda', 'cuda:0' or 'cpu'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CheckpointError(
                f"device {device!r} for {what}: this PyTorch build sees no CUDA device (torch.cuda.is_available() is "
                "False: no GPU, no driver, or a CPU-only torch); use device='cpu', or install a CUDA build of torch"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise CheckpointError(
                f"device {device!r} for {what}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered "
                f"from 0; use one of cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
    return dev


def first_line(e: BaseException) -> str:
    """The first line of an exception's text, without torch's advice to load with ``weights_only=False`` (which would
    unpickle code from the file: never passed on); the exception's type name when nothing is left."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and "weights_only" not in ln]
    return lines[0] if lines else type(e).__name__


@contextlib.contextmanager
def load_errors(path: object, what: str) -> Iterator[None]:
    """Turn any stray failure while reading ``path`` into a :class:`CheckpointError` naming it (the safety net of
    every load path; the readers raise CheckpointError with a precise message themselves wherever they can)."""
    try:
        yield
    except CheckpointError:
        raise
    except (OSError, EOFError, KeyError, IndexError, ValueError, struct.error, pickle.UnpicklingError) as e:
        raise CheckpointError(
            f"cannot load {path} as {what} ({type(e).__name__}: {first_line(e)}); the file is damaged, cut "
            "short or not this kind of file: re-download or re-copy it"
        ) from e


__all__ = ["CheckpointError", "CheckpointNotFoundError", "check_device", "check_regular_file", "first_line",
           "load_errors"]
