"""``python -m chameleon_core.training.world run --out DIR [--quick] [--seed S]``: the whole pipeline in miniature
(:mod:`chameleon_core.training.world.pipeline`)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m chameleon_core.training.world", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="world -> codec -> sft -> forcing -> GR-DMD -> streams, switches, metrics, plots")
    run.add_argument("--out", required=True, help="results folder (resumable: finished stages are skipped)")
    run.add_argument("--quick", action="store_true", help="the CI size: about two minutes on two cores")
    run.add_argument("--seed", type=int, default=0, help="seed of the data, the initial weights and the sampling")
    run.add_argument("--codec", default=None,
                     help="use this world codec file (written by chameleon_core.world.train_codec) instead of training "
                          "one in the run")
    run.add_argument("--threads", type=int, default=1,
                     help="torch intra-op threads (default 1: the tiny model gains little from more, and on a shared "
                          "machine spin-waiting threads slow it down)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    from .pipeline import run_pipeline

    if args.threads < 1:
        print(f"--threads must be at least 1, got {args.threads}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    results = run_pipeline(args.out, quick=args.quick, seed=args.seed, codec=args.codec)
    logging.getLogger(__name__).info("done in %.0f s; results in %s/results.json and report.md", results["wall_s"],
                                     args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
