"""Command line: ``python -m chameleon_core.training {prepare,sft,forcing,dmd,bench} ...``.

The same command runs under ``torchrun --nproc_per_node N -m chameleon_core.training ...`` (one process per GPU).
Every value, path, file and device is checked before any work starts (:mod:`.config`, :mod:`.preflight`,
:mod:`.prepare_checks`); a user error prints one message and exits with code 2 (:mod:`chameleon_core.tools.command`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from chameleon_core.tools.command import EXIT_USER_ERROR, parse_args, run_command

from .config import load_config, preset_names

logger = logging.getLogger(__name__)

PROG = "python -m chameleon_core.training"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _stage_parser(sub, name: str, help_: str) -> None:
    p = sub.add_parser(name, help=help_)
    p.add_argument("--config", required=True,
                   help=f"config JSON file, or a preset name: {', '.join(preset_names())}")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set optim.lr=2e-5 --set run.out=runs/x (JSON values)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    parser.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS,
                        help="DEBUG also shows the traceback of a user error")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="build the latent cache from a training CSV (authors' layout)")
    p.add_argument("--csv", required=True, help="CSV with columns video, prompt, width, height")
    p.add_argument("--out", required=True, help="cache folder to write (resumable)")
    p.add_argument("--vae", required=True, help="Wan2.2 VAE file, or random:PRESET (e.g. random:wan2.2-tiny) for tests")
    p.add_argument("--text-encoder", required=True,
                   help="umT5 folder (HF layout: text_encoder/ + tokenizer/), or random:DIM -- a deterministic "
                        "hash-of-words stand-in of width DIM for tests only (no meaning)")
    p.add_argument("--frames", type=int, default=81, help="pixel frames per clip, 4k+1 (default 81)")
    p.add_argument("--width", type=int, default=704)
    p.add_argument("--height", type=int, default=1280)
    p.add_argument("--text-len", type=int, default=512,
                   help="the model's text length: longer captions are cut to it as Wan's tokenizer cuts them "
                        "(default 512, every released Wan; 16 for the tiny test preset)")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"], help="storage dtype of the cache")
    p.add_argument("--skip-bad", action="store_true", help="skip bad rows and list them at the end")
    p.add_argument("--device", default="auto")
    _stage_parser(sub, "sft", "stage 1: in-context teacher SFT")
    _stage_parser(sub, "forcing", "stage 2: in-context teacher forcing")
    _stage_parser(sub, "dmd", "stage 3: gradient-reweighted DMD")
    b = sub.add_parser("bench", help="seconds/step, samples/s and peak memory of a stage")
    b.add_argument("--stage", required=True, choices=["sft", "forcing", "dmd"])
    b.add_argument("--config", default=None, help="config file or preset (default tiny_<stage>)")
    b.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    b.add_argument("--steps", type=int, default=5)
    b.add_argument("--frames", type=int, default=9, help="pixel frames of the synthetic cache")
    b.add_argument("--width", type=int, default=64)
    b.add_argument("--height", type=int, default=64)
    return parser


def run(args: argparse.Namespace) -> int:
    """The command, after the checks of :mod:`.preflight` (every one made before any work starts)."""
    from . import preflight

    if args.command == "prepare":
        from .prepare_checks import check_prepare

        check_prepare(args)
        from .prepare import prepare

        prepare(args.csv, args.out, vae=args.vae, text_encoder=args.text_encoder, frames=args.frames,
                width=args.width, height=args.height, dtype=args.dtype, skip_bad=args.skip_bad, device=args.device,
                text_len=args.text_len)
        return 0
    if args.command == "bench":
        cfg = load_config(args.config or f"tiny_{args.stage}", args.overrides, stage=args.stage)
        preflight.check_bench(args, cfg)
        from .bench import bench

        bench(args.stage, args.config or f"tiny_{args.stage}", args.overrides, steps=args.steps, frames=args.frames,
              width=args.width, height=args.height)
        return 0
    cfg = load_config(args.config, args.overrides, stage=args.command)
    preflight.check_stage(cfg)
    if args.command == "sft":
        from .stage_sft import run_sft

        run_sft(cfg)
    elif args.command == "forcing":
        from .stage_forcing import run_forcing

        run_forcing(cfg)
    else:
        try:
            from .stage_dmd import run_dmd
        except ImportError as e:
            logger.error("the dmd stage is not available in this checkout (%s)", e)
            return EXIT_USER_ERROR
        from .runtime import Run

        run = Run.start(cfg)
        try:
            run_dmd(run)
        finally:
            run.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code: 0, 2 with one message for a user error (a config value, a path, a file,
    a device: :mod:`chameleon_core.tools.command`), 130 for an interrupt; a defect keeps its traceback."""
    args = parse_args(build_parser(), argv)
    if isinstance(args, int):
        return args
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=args.log_level if rank == "0" else "WARNING",
                        format=f"%(asctime)s [rank{rank}] %(levelname)s %(name)s: %(message)s")
    return run_command(PROG, lambda: run(args), verbose=args.log_level == "DEBUG",
                       interrupted="interrupted; the last checkpoint in the run folder is where it resumes")


if __name__ == "__main__":
    sys.exit(main())
