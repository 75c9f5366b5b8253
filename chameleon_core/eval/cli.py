"""``python -m chameleon_core.eval <subcommand> ...``: one entry point, one registry of scoring subcommands.

Each subcommand is a module with ``main(argv) -> int``, imported only when chosen, so a subcommand whose optional
dependencies are missing (or whose module is not in this install) does not stop the others.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from ..tools.command import EXIT_USER_ERROR, run_command

logger = logging.getLogger(__name__)

PROG = "python -m chameleon_core.eval"


@dataclass(frozen=True)
class Subcommand:
    module: str
    """Module (relative to this package) holding ``main(argv: list[str]) -> int``."""
    summary: str
    """One line for the help text."""


SUBCOMMANDS: dict[str, Subcommand] = {
    "hgc": Subcommand(".hgc", "score generated videos HGC-Bench style (meta_data.csv + a folder of videos)"),
    "world": Subcommand(".world", "score videos of the synthetic fashion world exactly, from its ground-truth masks"),
}


def usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    lines = [f"usage: {PROG} <subcommand> [options]   ({PROG} <subcommand> --help for its options)", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {sub.summary}" for name, sub in SUBCOMMANDS.items()]
    return "\n".join(lines)


def load_subcommand(name: str):
    """The ``main`` of subcommand ``name``; raises ``LookupError`` with a message saying what is wrong."""
    if name not in SUBCOMMANDS:
        raise LookupError(f"unknown subcommand {name!r}; choose one of: {', '.join(SUBCOMMANDS)}")
    sub = SUBCOMMANDS[name]
    full_name = importlib.util.resolve_name(sub.module, __package__)
    try:
        module = importlib.import_module(full_name)
    except ModuleNotFoundError as e:
        if e.name == full_name:  # the subcommand's own module is absent, not one of its imports
            raise LookupError(
                f"subcommand {name!r} is not available in this install: module {full_name} is missing; update the "
                "pack to a version that includes it"
            ) from None
        raise LookupError(
            f"subcommand {name!r} needs the Python package {e.name!r}, which is not installed; install it "
            f"(pip install {e.name.split('.')[0]}) and run again"
        ) from None
    main = getattr(module, "main", None)
    if not callable(main):
        raise LookupError(f"subcommand {name!r}: module {full_name} has no main(argv) function")  # noqa: TRY004
    return main


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(usage())
        return 0
    if not args:
        print(f"{PROG}: error: no subcommand given; name one\n\n{usage()}", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        run = load_subcommand(args[0])
    except LookupError as e:
        print(f"{PROG}: error: {e}\n\n{usage()}", file=sys.stderr)
        return EXIT_USER_ERROR
    # Each subcommand applies the pack's error policy itself; this is the net for a user error that escapes it.
    return run_command(f"{PROG} {args[0]}", lambda: run(args[1:]))
