"""Exact metrics of the synthetic fashion world (stub; bodies follow): garment accuracy, leakage, identity error,
motion agreement, temporal smoothness, switch cut; and ``main(argv)`` for ``python -m chameleon_core.eval world``."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    """Score a folder of generated videos against the world's metadata; writes JSON. Returns the exit code."""
    raise NotImplementedError
