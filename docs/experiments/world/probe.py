"""Probe world models quickly: the recipe measurements of docs/experiments/world.md ("What moved the numbers").

    python docs/experiments/world/probe.py --run runs/world --clips 16 student A.safetensors B.safetensors ...
    python docs/experiments/world/probe.py --run runs/world --clips 8 teacher T.safetensors --cfg 1 3
    python docs/experiments/world/probe.py --run runs/world --clips 16 long A.safetensors --chunks 6

``student``: each model streams the first ``--clips`` held-out clips of the run's cache (3 chunks, the world
experiments' settings, seed = clip index) and is scored with ``eval.world``; also the RMS distance of its latents
from the clip's own (model space). ``teacher``: the bidirectional teacher (50 UniPC steps) at each guidance.
``long``: a stream of ``--chunks`` chunks without a switch, garment colour and identity error per chunk (past the
third chunk the stream is longer than every training clip). Models load as the experiments load them; nothing is
written.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from chameleon_core.eval.world import GroundTruth, garment_colour_accuracy, identity_scores, score_video
from chameleon_core.session import Session
from chameleon_core.training.world import experiments as ex
from chameleon_core.training.world.pipeline import Layout
from chameleon_core.world.codec import load_codec

logger = logging.getLogger("probe")
COLUMNS = ("garment_colour", "not_garment", "identity_skin", "identity_hair", "motion_agreement")


def _row(name: str, scores: list[dict], extra: str = "") -> str:
    means = {k: float(np.mean([s[k] for s in scores])) for k in COLUMNS}
    return f"{name}: " + " ".join(f"{k} {v:.3f}" for k, v in means.items()) + extra


def students(samples, codec, paths: list[str]) -> None:
    for path in paths:
        model = ex.load_model(Path(path))
        scores, rms = [], []
        for i, s in enumerate(samples):
            out = Session(ex.start(model, s, seed=i), chunks=3, codec=codec).run()
            latents = torch.cat([c.latents for c in out], dim=2)
            rms.append((latents - s.video).pow(2).mean().sqrt().item())
            video = ex.to_video(torch.cat([c.pixels for c in out], dim=2))
            scores.append(score_video(video, GroundTruth(s.sample, size=s.size, frames=video.shape[0])))
        logger.info(_row(path, scores, f" latent_rms {np.mean(rms):.3f}"))


def teachers(samples, codec, path: str, guidances: list[float]) -> None:
    model = ex.load_model(Path(path))
    for cfg in guidances:
        scores = []
        for i, s in enumerate(samples):
            video, _ = ex.teacher_clip(model, s, codec, steps=50, cfg=cfg, seed=i)
            scores.append(score_video(video, GroundTruth(s.sample, size=s.size, frames=video.shape[0])))
        logger.info(_row(f"{path} guidance {cfg:g}", scores))


def long_streams(samples, codec, paths: list[str], chunks: int) -> None:
    for path in paths:
        model = ex.load_model(Path(path))
        colour, ident = [], []
        for i, s in enumerate(samples):
            video, _ = ex.stream_clip(model, s, codec, chunks=chunks, seed=i)
            gt = GroundTruth(s.sample, size=s.size, frames=video.shape[0])
            parts = [slice(r.start, r.stop) for r in ex.chunk_frame_ranges(chunks * ex.CHUNK)]
            colour.append([garment_colour_accuracy(video[p], gt.video[p], gt.labels[p], s.sample.garment.colour)
                           for p in parts])
            ident.append([identity_scores(video[p], gt.labels[p], s.sample)["identity_error"] for p in parts])
        logger.info("%s: colour per chunk %s; identity error per chunk %s", path,
                    np.round(np.mean(colour, 0), 3).tolist(), np.round(np.mean(ident, 0), 3).tolist())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a world run folder (its held-out cache and codec)")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("what", choices=("student", "teacher", "long"))
    parser.add_argument("models", nargs="+")
    parser.add_argument("--cfg", type=float, nargs="+", default=[1.0, 3.0], help="teacher: guidances")
    parser.add_argument("--chunks", type=int, default=6, help="long: chunks to stream")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    layout = Layout(Path(args.run), 0)
    samples = ex.load_eval_samples(layout, args.clips)
    codec = load_codec(layout.codec)
    if args.what == "student":
        students(samples, codec, args.models)
    elif args.what == "teacher":
        for path in args.models:
            teachers(samples, codec, path, args.cfg)
    else:
        long_streams(samples, codec, args.models, args.chunks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
