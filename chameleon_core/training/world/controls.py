"""The inputs of the world experiments' controls that stand in for another sample: the shuffled garment (another
held-out sample's garment, of another colour than the one scored) and the other person (another held-out person's
skin and hair in the clip's caption). Samples are :class:`~chameleon_core.training.world.experiments.EvalSample`
(anything with ``.sample``, a :class:`~chameleon_core.world.catalog.WorldSample`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .experiments import EvalSample


def shuffled_garment(samples: Sequence[EvalSample], i: int, avoid: str):
    """The control's garment for sample ``i``: the next held-out sample's garment (then the one after, ...) whose
    colour is not ``avoid`` (the colour the metric expects)."""
    n = len(samples)
    for k in range(1, n + 1):
        g = samples[(i + k) % n].sample.garment
        if g.colour != avoid:
            return g
    from chameleon_core.world.catalog import GARMENT_COLOUR

    other = next(c for c in GARMENT_COLOUR if c != avoid)  # every sample wears ``avoid``: recolour one
    return replace(samples[i].sample.garment, colour=other)


def other_person(samples: Sequence[EvalSample], i: int) -> EvalSample:
    """The ``other_person`` control's sample for sample ``i``: the next held-out sample (then the one after, ...)
    whose person differs in both skin and hair, else in either, else the next one."""
    n = len(samples)
    me = samples[i].sample.identity
    others = [samples[(i + k) % n] for k in range(1, n)] or [samples[i]]
    for differs in (lambda o: o.skin != me.skin and o.hair != me.hair, lambda o: o.skin != me.skin or o.hair != me.hair):
        for o in others:
            if differs(o.sample.identity):
                return o
    return others[0]


def other_person_prompt(s: EvalSample, other: EvalSample, text_len: int) -> torch.Tensor:
    """Prompt features ``[1, L, D]`` of ``s``'s full caption (its motion, face, wall) with ``other``'s skin and hair,
    encoded as the cache's prompts were (the world's caption encoder, the model's ``text_len``)."""
    from chameleon_core.training.data import caption_texts
    from chameleon_core.world.captions import caption, encode_caption

    theirs = other.sample.identity
    mixed = replace(s.sample, identity=replace(s.sample.identity, skin=theirs.skin, hair=theirs.hair))
    return encode_caption(caption_texts(caption(mixed))["full"], max_len=text_len)
