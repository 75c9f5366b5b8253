"""LoRA adapters as the public causal students publish them, merged into the transformer while it loads.

LongLive (1.0: rank 256, 2.0: rank 128) trains its students as a LoRA on a base generator with ``peft`` and saves
``get_peft_model_state_dict`` of the wrapped ``CausalWanModel`` (optionally under a ``generator_lora`` entry):
``base_model.model.blocks.N.<module>.lora_A.weight`` ``[rank, in]`` and ``...lora_B.weight`` ``[out, rank]`` for
every linear layer of every block (``utils/lora_utils.py`` ``configure_lora_for_model``). Their inference merges it
(``merge_and_unload``): ``W + (alpha / rank) * B @ A``, with ``alpha = rank`` in both releases' configs. The same
merge is done here, per weight as it is read, in fp32, before the cast to the compute dtype. Files are read as
safetensors or with ``torch.load(weights_only=True)``: nothing that can run code.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from .errors import CheckpointError, load_errors
from .files import resolve_checkpoint_files
from .layouts import strip_wrappers
from .tensors import first_names, open_source

LORA_ENTRY = "generator_lora"
"""The entry of LongLive's LoRA checkpoint that holds the adapter state dict."""
_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>A|B)(?:\.[^.]+)?\.weight$")
"""``<module>.lora_A.weight`` (peft's saved form) or ``<module>.lora_A.<adapter>.weight`` (a raw state dict)."""
_PREFIXES = ("base_model.model.", "model.")


@dataclass(frozen=True)
class LoRA:
    """A LoRA's low-rank factors per target weight: ``{model weight name: (A [r, in], B [out, r])}``."""

    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]]
    rank: int
    source: str

    def delta(self, name: str, scale: float) -> torch.Tensor | None:
        """``scale * B @ A`` (fp32) for the weight ``name``, or None when the LoRA does not touch it."""
        pair = self.pairs.get(name)
        if pair is None:
            return None
        a, b = pair
        return scale * (b.float() @ a.float())


def _module_name(raw: str) -> str:
    name = strip_wrappers(raw)
    for prefix in _PREFIXES:
        name = name.removeprefix(prefix)
    return name


def read_lora(path: str | os.PathLike[str]) -> LoRA:
    """The LoRA in ``path`` (a ``.pt`` / ``.pth`` with or without a ``generator_lora`` entry, or a safetensors file),
    keyed by the transformer weight each pair updates. Raises :class:`CheckpointError` naming the file and the fix."""
    files = resolve_checkpoint_files(path)
    with load_errors(path, "a LoRA adapter"), open_source(files, preferred=(LORA_ENTRY,),
                                                          expected="a LoRA state dict (lora_A / lora_B)") as source:
        shapes = source.shapes()
        halves: dict[str, dict[str, torch.Tensor]] = {}
        other = []
        for raw in source.order(shapes):
            m = _KEY.match(raw)
            if m is None:
                other.append(raw)
                continue
            weight = _module_name(m.group("module")) + ".weight"
            halves.setdefault(weight, {})[m.group("part")] = source.read(raw)[0].clone()
    if not halves:
        raise CheckpointError(
            f"{path} holds no LoRA weights (no '<module>.lora_A.weight' / '.lora_B.weight'; first keys: "
            f"{first_names(other)}); pass a LoRA saved by peft (LongLive's lora.pt), or load the file as the "
            "transformer itself"
        )
    pairs, ranks = {}, set()
    for weight, parts in halves.items():
        if set(parts) != {"A", "B"}:
            missing = "lora_B" if "A" in parts else "lora_A"
            raise CheckpointError(f"{path}: the LoRA of {weight!r} has no {missing}; the file is incomplete, "
                                  "re-download it")
        a, b = parts["A"], parts["B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise CheckpointError(f"{path}: the LoRA of {weight!r} has lora_A {list(a.shape)} and lora_B "
                                  f"{list(b.shape)}, which do not multiply ([rank, in] and [out, rank]); the file is "
                                  "damaged")
        ranks.add(a.shape[0])
        pairs[weight] = (a, b)
    return LoRA(pairs, max(ranks), str(path))


def check_lora_fits(lora: LoRA, shapes: Mapping[str, tuple[int, ...]], model_name: str) -> None:
    """Every pair updates a weight the model has, with that weight's shape; raises :class:`CheckpointError`."""
    unknown = sorted(set(lora.pairs) - set(shapes))
    if unknown:
        raise CheckpointError(
            f"the LoRA {lora.source} updates {len(unknown)} weights that the transformer {model_name} does not have "
            f"(e.g. {unknown[:3]}); it belongs to another model: pass the base generator it was trained on"
        )
    for name, (a, b) in lora.pairs.items():
        want = tuple(shapes[name])
        if (b.shape[0], a.shape[1]) != want:
            raise CheckpointError(
                f"the LoRA {lora.source} gives {name!r} a [{b.shape[0]}, {a.shape[1]}] update but the transformer "
                f"{model_name} has it as {list(want)}; the LoRA belongs to another model size"
            )


def merging_transform(lora: LoRA, name: str, scale: float,
                      then: Callable[[torch.Tensor], torch.Tensor] | None = None
                      ) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The per-weight transform that adds the LoRA's update to ``name`` (after ``then``, e.g. an fp8 dequant), or
    ``then`` itself when the LoRA does not touch it."""
    if name not in lora.pairs:
        return then

    def merge(t: torch.Tensor) -> torch.Tensor:
        base = then(t) if then is not None else t
        return base.float() + lora.delta(name, scale).to(base.device)

    return merge


__all__ = ["LORA_ENTRY", "LoRA", "check_lora_fits", "merging_transform", "read_lora"]
