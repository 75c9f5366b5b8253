"""Captions of the world and a deterministic caption encoder for its vocabulary.

A caption is the authors' JSON object: ``en_long`` and ``en_short``, each ``[dynamic, static]`` (the motion; the
person and garment). The ``cn_*`` keys are left out: :func:`chameleon_core.training.data.parse_caption` fills them
from the English ones.

The encoder (:func:`encode_caption`) stands in for umT5 in the world: the text is lower-cased and split into words
(``\\w+``, as :func:`chameleon_core.training.prepare.random_text_encoder` splits), an end token ``</s>`` is appended
(so the empty prompt is the end token alone, as with umT5), and token ``i`` with word ``w`` gets
``word_vector(w) + 0.5 * position_vector(i)``: two fixed N(0, 1) vectors seeded by SHA-256 of the word (or the
position) and ``seed``. No learning, no state: the same caption always gives the same features, on any machine.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch

from .catalog import Garment, WorldSample

TEXT_DIM = 64
"""Default feature width: the core's ``tiny`` preset's ``text_dim``."""
END_TOKEN = "</s>"
POSITION_SCALE = 0.5

MOTION_PHRASE = {
    "walk": ("the person walks from left to right, swinging arms and legs", "a person walks"),
    "turn": ("the person turns sideways and back to face the camera", "a person turns"),
    "sway": ("the person sways from side to side with arms slightly out", "a person sways"),
    "raise_arms": ("the person slowly raises both arms above the head", "a person raises arms"),
    "pan": ("the camera pans to the left past the standing person", "the camera pans"),
}


def caption(sample: WorldSample, garment: Garment | None = None, *, garment_words: bool = False
            ) -> dict[str, list[str]]:
    """Caption JSON object of ``sample``: ``{"en_long": [dynamic, static], "en_short": [dynamic, static]}``.

    The world's captions carry **no garment words** by default: the static part names the person and the scene
    only, so a model trained on them can take the garment from nowhere but the garment image (what the proof
    measures). ``garment_words=True`` appends the garment (``garment`` if given, else ``sample.garment``)."""
    g = garment or sample.garment
    ident = sample.identity
    long_dynamic, short_dynamic = MOTION_PHRASE[sample.motion]
    static = (f"a {ident.body} person with {ident.skin} skin, {ident.hair} hair and {_a(ident.face)} {ident.face} "
              f"face, in front of a {ident.background} wall with poles")
    short_static = f"a person with {ident.skin} skin and {ident.hair} hair"
    if garment_words:
        static += f", wearing {_a(g.colour)} {g.describe()}"
        short_static += f", wearing {_a(g.colour)} {g.describe()}"
    return {"en_long": [long_dynamic, static], "en_short": [short_dynamic, short_static]}


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def tokens(text: str) -> list[str]:
    """The words of ``text`` (lower-cased ``\\w+``) plus the end token."""
    return re.findall(r"\w+", text.lower()) + [END_TOKEN]


def _vector(key: str, dim: int, seed: int) -> torch.Tensor:
    digest = hashlib.sha256(f"{seed}|{key}".encode()).digest()
    return torch.randn(dim, generator=torch.Generator().manual_seed(int.from_bytes(digest[:8], "little")))


def encode_caption(text: str, *, dim: int = TEXT_DIM, max_len: int | None = None, seed: int = 0) -> torch.Tensor:
    """Deterministic features ``[1, L, dim]`` float32 of ``text`` (see the module docstring).

    ``max_len`` (the model's ``text_len``): a longer text keeps its first ``max_len - 1`` words and the end token.
    """
    if not isinstance(text, str):
        raise TypeError(f"encode_caption takes the caption text (str), got {type(text).__name__}")
    if dim < 1 or (max_len is not None and max_len < 1):
        raise ValueError(f"dim and max_len must be positive, got dim={dim}, max_len={max_len}")
    toks = tokens(text)
    if max_len is not None and len(toks) > max_len:
        toks = toks[: max_len - 1] + [END_TOKEN]
    rows = [_vector(f"word:{w}", dim, seed) + POSITION_SCALE * _vector(f"pos:{i}", dim, seed)
            for i, w in enumerate(toks)]
    return torch.stack(rows)[None]


def save_caption_features(path: str | Path, text: str, *, dim: int = TEXT_DIM, max_len: int | None = None,
                          seed: int = 0) -> Path:
    """:func:`encode_caption` written with :func:`chameleon_core.text.save_prompt_embeddings` (the text goes in the
    file's metadata), so the CLI and the nodes load it as prompt features; returns the path."""
    from chameleon_core.text import save_prompt_embeddings

    return save_prompt_embeddings(path, encode_caption(text, dim=dim, max_len=max_len, seed=seed), text)
