"""Whether a transformer checkpoint is the causal few-step student or the bidirectional teacher.

Both roles share one architecture, so the tensors cannot tell them apart; the role comes from what the file says
about itself, then from how it was made, then from its name.
"""

from __future__ import annotations

import os
from pathlib import Path

from .metadata import kind_from_metadata
from .transformer import inspect_checkpoint

STUDENT_NAME_HINTS = ("student", "causal", "self_forcing", "self-forcing", "selfforcing", "causvid", "longlive",
                      "dmd", "stream")  # fmt: skip
"""File-name fragments of the public causal students (Self-Forcing, CausVid, LongLive) and of our own."""


def checkpoint_kind(path: str | os.PathLike[str]) -> str:
    """``student`` or ``teacher`` for a transformer checkpoint; raises ValueError for anything else (a VAE, ...).

    The role comes from, in order: the ``fashionchameleon.kind`` metadata; a training ``.pt`` (``generator`` /
    ``generator_ema``: the distillation trainers' causal generator); a file name containing one of
    :data:`STUDENT_NAME_HINTS`; otherwise ``teacher`` (plain Wan releases are bidirectional).
    """
    info = inspect_checkpoint(path)
    kind = kind_from_metadata(info.metadata, str(info.files[0]))
    if kind is not None:
        return kind
    if info.layout == "training":
        return "student"
    name = Path(path).name.lower()
    return "student" if any(h in name for h in STUDENT_NAME_HINTS) else "teacher"
