"""What each stream option (issue 16) changes in the synthetic world's metrics, with the world's trained student.

    python docs/benchmarks/options_world.py --run runs/world [--seed 0] [--clips 16] [--out options_world.json]

``--run`` is a finished ``python -m chameleon_core.training.world run --out DIR`` folder; ``--seed`` picks its
training seed (:class:`~chameleon_core.training.world.pipeline.Layout`: the GR-DMD student ``layout.student``, the
codec ``layout.codec``, the held-out latent cache ``layout.cache("test")``). The first ``--clips`` held-out clips are
streamed by the student through :class:`~chameleon_core.session.Session` (the settings and conditions of
``training/world/experiments.py``: the clip's motion caption, reference and garment image, seed ``--seed + clip``,
the clip's 3 chunks), once per variant:

- ``plain``: no option;
- ``local_k3`` / ``local_k1``: frame-local attention over the last 3 / 1 history latent frames. The cache holds the
  2 conditions and one clip (11 latent frames: a 3-frame sink and a 6-frame window); at a clip's 3 chunks the first
  chunk is the sink and the last chunk's other history is exactly the 3 frames before it, so k = 3 sees everything
  the full window does and must equal ``plain`` (checked: ``local_k3_vs_plain`` in the JSON);
- ``weighting``: condition weighting, bias -2 on the reference / garment keys in the first step ramping to 0;
- ``motion_transfer``: a driving video = the same person and motion wearing the *reference's* garment (rendered and
  encoded with the codec), injected at strength 0.83 over the whole frame -- the motion should follow it and the
  garment should stay the garment image's;
- ``tryon_masked``: that same video dressed by try-on at strength 0.94 inside the ground-truth garment mask (area-
  pooled to the latent grid; outside it the video is kept) -- the garment should become the garment image's,
  identity and motion stay the video's.

Two controls are scored the same way (they stream nothing): ``source_video`` (the driving video through the codec:
what copying the source would score) and ``codec_ceiling`` (the ground truth through the codec).

Scores (``chameleon_core/eval/world.py``, against the ground truth rendered for the clip): garment colour accuracy
(the garment image's colour inside the ground-truth garment mask), leakage of the reference garment's colour (the
other garment) inside the mask, identity error, motion agreement, temporal jitter and pixel MSE. Printed: means with
bootstrap 95% intervals over clips and paired differences against ``plain`` (same clips and seeds,
:mod:`chameleon_core.training.world.stats`); the JSON holds every metric of every clip.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from chameleon_core.eval.world import GroundTruth, leakage, score_video  # noqa: E402
from chameleon_core.latents import to_model_space  # noqa: E402
from chameleon_core.session import Session  # noqa: E402
from chameleon_core.stream_options import ConditionWeighting, SourceVideo, latent_mask  # noqa: E402
from chameleon_core.stream_options import with_options  # noqa: E402
from chameleon_core.training.world import experiments as ex  # noqa: E402
from chameleon_core.training.world import stats  # noqa: E402
from chameleon_core.training.world.pipeline import Layout  # noqa: E402
from chameleon_core.world.codec import load_codec, reconstruct  # noqa: E402
from chameleon_core.world.render import GARMENT_LABEL, render  # noqa: E402

logger = logging.getLogger("options_world")

VARIANTS = ("plain", "local_k3", "local_k1", "weighting", "motion_transfer", "tryon_masked")
CONTROLS = ("source_video", "codec_ceiling")
LABELS = {
    "plain": "plain",
    "local_k3": "local attention k = 3",
    "local_k1": "local attention k = 1",
    "weighting": "condition weighting (-2 -> 0, linear)",
    "motion_transfer": "motion transfer (driving = same person and motion in the reference's garment, 0.83)",
    "tryon_masked": "try-on onto that video, in the ground-truth garment mask (0.94)",
    "source_video": "control: the driving video itself (through the codec)",
    "codec_ceiling": "control: the ground truth through the codec",
}
METRICS = ("garment_colour", "leakage_reference", "identity_error", "motion_agreement", "temporal_jitter", "pixel_mse")
HEADERS = {"garment_colour": "garment colour", "leakage_reference": "reference-colour leakage",
           "identity_error": "identity error", "motion_agreement": "motion agreement",
           "temporal_jitter": "temporal jitter", "pixel_mse": "pixel MSE"}
PAIRED = ("garment_colour", "leakage_reference", "identity_error", "motion_agreement")
MOTION_STRENGTH = 0.83
TRYON_STRENGTH = 0.94


def encode_video(codec, frames: torch.Tensor) -> torch.Tensor:
    """Frames ``[T, H, W, 3]`` in 0..1 -> model-space latents ``[1, C, T', h, w]`` (whole-clip encode, as the
    latent cache was made: ``training/prepare.py``)."""
    with torch.no_grad():
        x = frames.permute(3, 0, 1, 2)[None].to(codec.device, codec.dtype) * 2.0 - 1.0
        return to_model_space(codec.encode(x).float()).cpu()


def options_for(variant: str, source: torch.Tensor, mask: torch.Tensor) -> dict:
    """:func:`~chameleon_core.stream_options.with_options` keywords of a variant."""
    if variant == "plain":
        return {}
    if variant.startswith("local_k"):
        return {"local_frames": int(variant.removeprefix("local_k"))}
    if variant == "weighting":
        return {"condition_weights": ConditionWeighting(early_bias=-2.0, late_bias=0.0)}
    if variant == "motion_transfer":
        return {"source": SourceVideo(source, MOTION_STRENGTH)}
    if variant == "tryon_masked":
        return {"source": SourceVideo(source, TRYON_STRENGTH, mask)}
    raise ValueError(f"unknown variant {variant!r}")


def stream(model, s: ex.EvalSample, codec, *, chunks: int, seed: int,
           options: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """One clip through the session loop with the variant's options: (video ``[T, H, W, 3]``, clean latents)."""
    state = ex.start(model, s, seed=seed)
    if options:
        state = with_options(state, **options)
    out = Session(state, chunks=chunks, codec=codec).run()
    return ex.to_video(torch.cat([c.pixels for c in out], dim=2)), torch.cat([c.latents for c in out], dim=2)


def clip_row(video: torch.Tensor, truth: GroundTruth) -> dict[str, float]:
    scores = score_video(video, truth)
    row = {k: float(scores[k]) for k in ex.CLIP_METRICS}
    row["leakage_reference"] = leakage(video, truth.labels, truth.sample.reference_garment.colour)
    row["pixel_mse"] = float((video - truth.video).pow(2).mean())
    return row


def markdown(summary: dict, effects: dict) -> str:
    means = stats.table({LABELS[v]: summary[v] for v in (*VARIANTS, *CONTROLS)}, METRICS, "variant", HEADERS)
    diffs = stats.table({LABELS[v]: effects[v] for v in VARIANTS if v != "plain"}, PAIRED, "variant minus plain",
                        HEADERS)
    return means + "\n\n" + diffs + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, type=Path, help="a finished world run folder")
    p.add_argument("--seed", type=int, default=0, help="the run's training seed (its student); stream seeds start here")
    p.add_argument("--clips", type=int, default=16, help="held-out clips to stream")
    p.add_argument("--out", type=Path, default=None, help="JSON file for every number")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    layout = Layout(args.run, args.seed)
    codec = load_codec(layout.codec)
    student = ex.load_model(layout.student)
    samples = ex.load_eval_samples(layout, args.clips)
    rows: dict[str, list[dict]] = {v: [] for v in (*VARIANTS, *CONTROLS)}
    k3_latent_diff, k3_pixel_diff, encode_diff, sleeves_differ = [], [], [], 0
    for i, s in enumerate(samples):
        truth = GroundTruth(s.sample, size=s.size, frames=s.clip_frames)
        driving = render(s.sample, size=s.size, frames=s.clip_frames, garment=s.sample.reference_garment)
        source = encode_video(codec, driving.float_frames())
        encode_diff.append(float((encode_video(codec, truth.video) - s.video).abs().max()))
        _, _, lf, h, w = source.shape
        mask = latent_mask((truth.labels == GARMENT_LABEL).float(), lf, h, w)
        sleeves_differ += s.sample.garment.sleeves != s.sample.reference_garment.sleeves
        chunks = lf // ex.CHUNK
        outputs = {}
        for v in VARIANTS:
            video, latents = stream(student, s, codec, chunks=chunks, seed=args.seed + i,
                                    options=options_for(v, source, mask))
            outputs[v] = (video, latents)
            rows[v].append(clip_row(video, truth))
        rows["source_video"].append(clip_row(reconstruct(codec, driving.float_frames()), truth))
        rows["codec_ceiling"].append(clip_row(ex.codec_ceiling(codec, truth), truth))
        k3_latent_diff.append(float((outputs["local_k3"][1] - outputs["plain"][1]).abs().max()))
        k3_pixel_diff.append(float((outputs["local_k3"][0] - outputs["plain"][0]).abs().max()))
        logger.info("clip %d/%d %s: plain colour %.3f, try-on colour %.3f (%.0f s)", i + 1, len(samples), s.key,
                    rows["plain"][-1]["garment_colour"], rows["tryon_masked"][-1]["garment_colour"],
                    time.perf_counter() - t0)
    summary = stats.summarise(rows, seed=args.seed)
    metrics = (*METRICS, *(k for k in ex.CLIP_METRICS if k not in METRICS))
    effects = stats.effects(rows, {v: (v, "plain") for v in VARIANTS if v != "plain"}, metrics, seed=args.seed)
    seconds = time.perf_counter() - t0
    sys.stdout.write(markdown(summary, effects))
    sys.stdout.write(f"local_k3 vs plain: max |latent diff| {max(k3_latent_diff):.3g}, max |pixel diff| "
                     f"{max(k3_pixel_diff):.3g}; {len(samples)} clips in {seconds:.0f} s\n")
    if args.out:
        args.out.write_text(json.dumps({
            "run": str(args.run), "seed": args.seed, "clips": [s.key for s in samples], "seconds": round(seconds, 1),
            "variants": LABELS, "strengths": {"motion_transfer": MOTION_STRENGTH, "tryon_masked": TRYON_STRENGTH},
            "local_k3_vs_plain": {"max_abs_latent_diff": max(k3_latent_diff), "max_abs_pixel_diff": max(k3_pixel_diff),
                                  "identical": max(k3_latent_diff) == 0.0},
            "source_encode_vs_cache_max_abs_diff": max(encode_diff),
            "clips_whose_reference_garment_has_other_sleeves": sleeves_differ,
            "summary": summary, "paired_vs_plain": effects, "rows": rows,
        }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
