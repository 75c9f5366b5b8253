"""The synthetic fashion world's vocabulary: identity, garment and motion attributes, a seeded sampler, and the
held-out split of combinations.

Everything here is plain data (frozen dataclasses of strings); :mod:`.render` turns a :class:`WorldSample` into
pixels and :mod:`.captions` into words. Colours are RGB in 0..255.

Held-out split. A sample's *combination* is ``(skin, hair, garment colour, garment pattern, motion)``; a fixed
hash (independent of any seed) puts 1 in 5 combinations in ``test``, the rest in ``train``. Every single attribute
value occurs in both splits, but no test combination of those five ever occurs in training, so a model that scores
well on ``test`` composes attributes it saw only apart. (The full identity x garment x motion triple of a test sample
is then unseen in training too.)
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace

import numpy as np

SKIN = {"pale": (241, 204, 178), "tan": (214, 160, 110), "brown": (150, 98, 62), "dark": (92, 58, 38)}
HAIR = {"black": (25, 22, 24), "blond": (232, 208, 128), "pink": (225, 110, 170), "navy": (30, 40, 110)}
FACE = ("round", "oval", "square")
BODY = ("slim", "medium", "broad")
#: Backgrounds: flat wall colour; vertical poles (see :data:`POLE`) make camera pans visible.
BACKGROUND = {"sage": (170, 190, 140), "teal": (110, 175, 170), "sky": (160, 200, 235), "mint": (180, 230, 205)}
#: Pole colour of every background: the wall colour times this factor.
POLE = 0.62
TROUSERS = (90, 90, 100)

#: Garment colours; a pattern's marks are :data:`MARK` (near-white) on the garment colour.
GARMENT_COLOUR = {
    "red": (210, 40, 45),
    "green": (40, 165, 70),
    "blue": (40, 80, 205),
    "yellow": (235, 205, 40),
    "purple": (135, 50, 170),
    "orange": (240, 130, 30),
}
MARK = (245, 245, 245)
"""Colour of a garment pattern's marks (stripes, checks, dots), whatever the garment's colour."""
PATTERN = ("plain", "stripes", "checks", "dots")
GARMENT_KIND = ("shirt", "dress")
SLEEVES = ("sleeveless", "short", "long")
MOTION = ("walk", "turn", "sway", "raise_arms", "pan")

SIZE = 64
"""Default frame size (square, pixels). The codec compresses 16x spatially: 4x4 latents."""
FRAMES = 33
"""Default frame count, 4k+1: 9 latent frames, three chunks of 3 (the authors' chunk size)."""
MOTION_CYCLE = 32
"""Frames of one motion loop: a motion's clock reads ``p = t / MOTION_CYCLE`` at frame ``t``; every motion repeats
after one unit (a 33-frame clip shows one whole loop)."""
HELD_OUT_EVERY = 5
"""1 in this many combinations is held out (``test``)."""
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Identity:
    skin: str
    hair: str
    face: str
    body: str
    background: str


@dataclass(frozen=True)
class Garment:
    kind: str
    """``shirt`` (ends at the hips) or ``dress`` (to the knees)."""
    colour: str
    pattern: str
    sleeves: str

    def describe(self) -> str:
        """``a red striped short-sleeved shirt`` style words (used in captions)."""
        pattern = {"plain": "plain", "stripes": "striped", "checks": "checked", "dots": "dotted"}[self.pattern]
        sleeves = {"sleeveless": "sleeveless", "short": "short-sleeved", "long": "long-sleeved"}[self.sleeves]
        return f"{self.colour} {pattern} {sleeves} {self.kind}"


@dataclass(frozen=True)
class WorldSample:
    """One clip of the world: who, wearing what, doing what; plus the reference garment (same kind, other colour)."""

    identity: Identity
    garment: Garment
    motion: str
    reference_garment: Garment
    """What the person wears in the reference image: same kind as ``garment``, a different colour (and pattern)."""
    phase: int = 0
    """The clip's first frame on the motion's clock (0 .. ``MOTION_CYCLE - 1``): clips start anywhere in a motion,
    so a model learns to continue a motion from any pose (what a stream needs after a garment switch, when the last
    frame becomes the new reference); one frame shows which way the motion goes on (:mod:`.render`)."""

    @property
    def combination(self) -> tuple[str, str, str, str, str]:
        return combination_key(self.identity, self.garment, self.motion)

    @property
    def split(self) -> str:
        return split_of(self.identity, self.garment, self.motion)

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> WorldSample:
        return WorldSample(Identity(**d["identity"]), Garment(**d["garment"]), d["motion"],
                           Garment(**d["reference_garment"]), int(d.get("phase", 0)))


@dataclass(frozen=True)
class PaletteEntry:
    """One colour the renderer can draw, and what it is."""

    kind: str
    """``garment`` (a garment colour), ``mark`` (a pattern's marks), ``skin``, ``hair``, ``wall``, ``pole`` or
    ``trousers``."""
    name: str
    """The attribute value (``red``, ``pale``, ``teal``, ...); the kind again for ``mark`` and ``trousers``."""
    rgb: tuple[int, int, int]


def palette() -> tuple[PaletteEntry, ...]:
    """Every colour the renderer draws, exactly (the world has no antialiasing): garment colours, the mark, skins,
    hairs, walls, poles (wall x :data:`POLE`, rounded as the renderer rounds) and the trousers."""
    entries = [PaletteEntry("garment", k, v) for k, v in GARMENT_COLOUR.items()]
    entries.append(PaletteEntry("mark", "mark", MARK))
    entries += [PaletteEntry("skin", k, v) for k, v in SKIN.items()]
    entries += [PaletteEntry("hair", k, v) for k, v in HAIR.items()]
    entries += [PaletteEntry("wall", k, v) for k, v in BACKGROUND.items()]
    entries += [PaletteEntry("pole", k, tuple(int(np.rint(c * POLE)) for c in v)) for k, v in BACKGROUND.items()]
    entries.append(PaletteEntry("trousers", "trousers", TROUSERS))
    return tuple(entries)


def palette_separation() -> tuple[float, PaletteEntry, PaletteEntry]:
    """The smallest RGB distance (0..255 units) between two palette entries that the world's metrics must tell
    apart: any two entries but two scene colours (walls, poles, trousers, which all count as "not a garment" and
    are not identity). 51 today (pale skin against blond hair); a pixel off by less than half of it is classified
    right."""
    scene = {"wall", "pole", "trousers"}
    entries = palette()
    best = None
    for i, a in enumerate(entries):
        for b in entries[i + 1:]:
            if a.kind in scene and b.kind in scene:
                continue
            d = float(np.linalg.norm(np.subtract(a.rgb, b.rgb)))
            if best is None or d < best[0]:
                best = (d, a, b)
    return best


def combination_key(identity: Identity, garment: Garment, motion: str) -> tuple[str, str, str, str, str]:
    return (identity.skin, identity.hair, garment.colour, garment.pattern, motion)


def split_of(identity: Identity, garment: Garment, motion: str) -> str:
    """``test`` for the held-out combinations, ``train`` otherwise (a fixed hash; no seed involved)."""
    digest = hashlib.sha256("|".join(combination_key(identity, garment, motion)).encode()).digest()
    return "test" if int.from_bytes(digest[:4], "little") % HELD_OUT_EVERY == 0 else "train"


def _pick(rng: np.random.Generator, values) -> str:
    values = list(values)
    return values[int(rng.integers(len(values)))]


def random_garment(rng: np.random.Generator, kind: str | None = None, not_colour: str | None = None) -> Garment:
    colours = [c for c in GARMENT_COLOUR if c != not_colour]
    return Garment(kind or _pick(rng, GARMENT_KIND), _pick(rng, colours), _pick(rng, PATTERN), _pick(rng, SLEEVES))


def other_garment(rng: np.random.Generator, garment: Garment) -> Garment:
    """A different garment of the same kind: another colour, pattern and sleeves drawn afresh."""
    return random_garment(rng, kind=garment.kind, not_colour=garment.colour)


def sample_world(seed: int, split: str = "train") -> WorldSample:
    """The ``seed``-th sample of ``split``: attributes drawn uniformly (numpy PCG64 seeded with ``seed`` and the
    split), redrawn until the combination belongs to ``split``. Same seed and split -> same sample."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    while True:
        identity = Identity(_pick(rng, SKIN), _pick(rng, HAIR), _pick(rng, FACE), _pick(rng, BODY),
                            _pick(rng, BACKGROUND))
        garment = random_garment(rng)
        motion = _pick(rng, MOTION)
        if split_of(identity, garment, motion) == split:
            reference = other_garment(rng, garment)
            return WorldSample(identity, garment, motion, reference, int(rng.integers(MOTION_CYCLE)))


def sample_switch_garment(sample: WorldSample, seed: int) -> Garment:
    """A garment to switch to: same kind, different colour from ``sample.garment`` (seeded)."""
    return other_garment(np.random.default_rng([seed, 7]), sample.garment)


def with_garment(sample: WorldSample, garment: Garment) -> WorldSample:
    return replace(sample, garment=garment)
