"""Reading a small plain weight file whole: the tiny video decoder (TAEHV) and the LAION aesthetic MLP.

The one path for every small state-dict file the pack reads besides transformers and VAEs, with the checks those
have: the path must be a regular file (:func:`~.errors.check_regular_file`: a FIFO would block the reader forever, a
folder is named as one), ``.safetensors`` goes through the package's own header reader (a truncated, empty or
foreign file is named as such), a torch file through :func:`~.tensors.torch_load` (weights-only: a pickle that holds
code is refused, and no message suggests ``weights_only=False``), and NaN/inf weights are refused
(:class:`~.tensors.FiniteCheck`). Every failure is a :class:`~.errors.CheckpointError` naming the file and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from .errors import CheckpointError, CheckpointNotFoundError, check_regular_file, load_errors
from .files import SAFETENSORS_SUFFIXES, TORCH_SUFFIXES
from .tensors import FiniteCheck, open_source, read_as


def read_weight_file(
    path: str | os.PathLike[str],
    *,
    what: str,
    get: str,
    preferred: Sequence[str] = ("state_dict",),
    finite: bool = True,
) -> dict[str, torch.Tensor]:
    """Every tensor of a ``.safetensors`` or weights-only torch file, on the CPU in its stored dtype.

    ``what`` names the file's role in messages (``"tiny decoder file"``), ``get`` says where to get a good one
    (appended to a missing-file message). ``preferred``: inside a ``.pt`` holding several state dicts, the entry to
    take. Raises :class:`CheckpointError` (:class:`CheckpointNotFoundError` for a missing file).
    """
    p = Path(path).expanduser()
    try:
        check_regular_file(p, what, get)
    except CheckpointNotFoundError:
        raise CheckpointNotFoundError(f"{what} not found: {p} (absolute: {p.resolve()}); {get}") from None
    suffix = p.suffix.lower()
    if suffix not in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
        raise CheckpointError(
            f"{what} {p} has the suffix {suffix!r}, which is neither safetensors ({', '.join(SAFETENSORS_SUFFIXES)}) "
            f"nor a torch file ({', '.join(TORCH_SUFFIXES)}); {get}"
        )
    with load_errors(p, what), open_source([p], preferred=preferred, expected=f"the {what}'s state dict") as source:
        tensors = {name: read_as(source, name) for name in source.order(source.shapes())}
    if not tensors:
        raise CheckpointError(f"{what} {p} holds no tensors; {get}")
    if finite:
        check = FiniteCheck()
        for name, t in tensors.items():
            check.add(name, t)
        check.check(f"{what} {p}")
    return tensors


__all__ = ["read_weight_file"]
