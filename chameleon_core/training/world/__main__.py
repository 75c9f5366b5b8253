"""``python -m chameleon_core.training.world run --out DIR [--quick] [--seed S]``: the whole pipeline in miniature
(:mod:`chameleon_core.training.world.pipeline`); ``export --run DIR --out demo``: its student, codec, prompt and
images as the pack's demo files (:mod:`chameleon_core.training.world.export`)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from chameleon_core.training.config import AUTOCAST_NAMES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m chameleon_core.training.world", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="world -> codec -> sft -> forcing -> GR-DMD -> streams, switches, metrics, plots")
    run.add_argument("--out", required=True, help="results folder (resumable: finished stages are skipped)")
    run.add_argument("--quick", action="store_true",
                     help="the CI size: about 5 minutes on two cores with bf16 in hardware, 10 on two AVX2 cores")
    run.add_argument("--seed", type=int, default=0,
                     help="training seed (initial weights, data order, sampling); the world's data is the same for "
                          "every seed, so a second seed in the same --out reuses world, codec and caches")
    source = run.add_mutually_exclusive_group()
    source.add_argument("--codec", default=None,
                        help="use this world codec file (python -m chameleon_core.world.codec writes one); default: "
                             "the codec the pack ships in demo/models/vae/")
    source.add_argument("--train-codec", action="store_true",
                        help="train the codec in the run (about 85 minutes on two cores; --quick: a smoke-size one "
                             "that fails the gate)")
    export = sub.add_parser("export", help="write a finished run's student, codec, prompt and images as demo files")
    export.add_argument("--run", required=True, help="the run folder (run --out)")
    export.add_argument("--seed", type=int, default=0, help="which training seed's student")
    export.add_argument("--out", required=True, help="the demo folder (the pack's own: demo)")
    run.add_argument("--patch", type=int, choices=(1, 2), default=None,
                     help="the DiT's patch size over latent cells (default 2: 4 tokens per 64x64 frame; 1: 16 "
                          "tokens, about 4x the cost per step); use its own --out")
    run.add_argument("--threads", type=int, default=2,
                     help="torch intra-op threads (default 2: on two cores the tiny model trains 1.7-1.9x faster "
                          "than on one; use 1 for runs side by side, where spin-waiting threads slow each other)")
    run.add_argument("--autocast", choices=AUTOCAST_NAMES, default=None,
                     help="every training stage's model.autocast: auto (the default: bf16 where the CPU multiplies "
                          "bf16 in hardware, AVX-512 BF16 or AMX, where an SFT step is 1.5x faster than in fp32; fp32 "
                          "elsewhere, where bf16 is emulated and far slower), bf16, or off (fp32 throughout); use its "
                          "own --out")
    run.add_argument("--compile", choices=("on", "off"), default=None,
                     help="compile the DiT's blocks in SFT and teacher forcing (torch.compile; the full run's "
                          "default: about 15 s a stage, then SFT steps about 1.17x faster; needs a C++ compiler) "
                          "or not")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    from chameleon_core.training.parallel import MissingCompilerError
    from chameleon_core.world.codec import CodecGateError

    log = logging.getLogger(__name__)
    if args.command == "export":
        from .export import export_demo

        try:
            export_demo(args.run, args.out, seed=args.seed)
        except FileNotFoundError as e:
            sys.stderr.write(f"error: {e}\n")
            return 2
        return 0
    from dataclasses import replace

    from .pipeline import plan_for, run_pipeline

    if args.threads < 1:
        sys.stderr.write(f"error: --threads must be at least 1, got {args.threads}\n")
        return 2
    plan = plan_for(args.quick)
    if args.patch is not None:
        plan = replace(plan, model=replace(plan.model, patch=args.patch))
    if args.autocast is not None:
        plan = replace(plan, autocast=args.autocast)
    if args.compile is not None:
        plan = replace(plan, compile=args.compile == "on")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        results = run_pipeline(args.out, quick=args.quick, seed=args.seed, codec=args.codec,
                               train_codec=args.train_codec, plan=plan)
    except (CodecGateError, FileNotFoundError, MissingCompilerError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    finally:
        torch.set_num_threads(threads)  # an in-process caller (the CI test) gets its own setting back
    log.info("done in %.0f s; results in %s and %s/report.md", results["wall_s"],
             f"{args.out}/results_seed{args.seed}.json", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
