"""Seeded random models: what the benchmarks, ``python -m chameleon_core --random``, training's ``random:SEED`` init,
the demo files and the tiny checkpoints (``tools/tiny_checkpoints.py``) run on, and the tests too.

Random weights that give non-trivial outputs (activations stay O(1) through the blocks, timestep and shift terms
matter), drawn from a private generator so they depend on the seed, the config and the device type only.
"""

from __future__ import annotations

import math

import torch

from .config import PRESETS, WanConfig
from .model import WanModel


def random_transformer(
    config: WanConfig | None = None,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> WanModel:
    """A WanModel (``tiny`` preset by default) with seeded random weights that give non-trivial outputs.

    The one random-model helper of the project: the benchmarks, ``python -m chameleon_core --random``, the demo files,
    the tiny checkpoints and the tests use it. The model is built on the meta device and materialised directly on ``device`` (no slow default init of
    billions of weights on the host), then every parameter is drawn from a private generator on that device, in
    parameter order, so the weights depend on ``seed``, the config and the device type only, never on the global
    RNG. Matrices get std ``1/sqrt(fan_in)`` (activations stay O(1) through the blocks); biases and modulation tables
    std 0.05 (so timestep and shift terms matter); norm gains ``1 + 0.1 N(0, 1)``.
    """
    config = config or PRESETS["tiny"]
    with torch.device("meta"):
        model = WanModel(config)
    model = model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, device=p.device)
            if ".norm" in name:
                p.copy_(1 + 0.1 * noise)
            elif p.ndim >= 2 and not name.endswith("modulation"):
                p.copy_(noise / math.sqrt(math.prod(p.shape[1:])))
            else:
                p.copy_(0.05 * noise)
    return model.to(dtype).eval()


def random_lora(config: WanConfig, rank: int, *, seed: int = 0, scale: float = 0.05) -> dict[str, torch.Tensor]:
    """A LoRA over every linear layer of every block, in peft's saved names (``base_model.model.blocks.N.<module>
    .lora_A.weight`` ``[rank, in]``, ``.lora_B.weight`` ``[out, rank]``), as LongLive's ``configure_lora_for_model``
    targets them; seeded, with non-zero B so the update shows."""
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in WanModel(config).state_dict().items()}
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        if not name.startswith("blocks.") or not name.endswith(".weight") or len(shape) != 2 or ".norm" in name:
            continue
        module = name[: -len(".weight")]
        out[f"base_model.model.{module}.lora_A.weight"] = torch.randn(rank, shape[1], generator=gen) * scale
        out[f"base_model.model.{module}.lora_B.weight"] = torch.randn(shape[0], rank, generator=gen) * scale
    return out
