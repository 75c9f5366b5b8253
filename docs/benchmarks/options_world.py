"""What each stream option (issue 16) changes in the synthetic world's metrics, with the world's trained student.

    python docs/benchmarks/options_world.py --run runs/world [--clips 6] [--out options_world.json]

``--run`` is a finished ``python -m chameleon_core.training.world run --out DIR`` folder (its held-out latent cache,
codec and GR-DMD student). Each held-out clip is streamed by the student through the session loop with its own
reference, garment image and motion caption, once per variant:

- ``plain``: no option;
- ``local_k3`` / ``local_k1``: frame-local attention over the last 3 / 1 history latent frames (the full window is 9;
  at a clip's 3 chunks the first chunk is the sink, so k = 3 sees the whole history: it must equal ``plain``);
- ``weighting``: condition weighting, bias -2 on the reference / garment keys in the first step ramping to 0;
- ``motion_transfer``: a driving video = the same person and motion wearing the *other* garment (the reference's),
  injected at strength 0.83 -- the motion should follow it and the garment should stay the garment image's;
- ``tryon_masked``: the same video dressed by try-on at strength 0.94 inside its ground-truth garment mask (outside
  the mask the video is kept) -- the garment should move to the target, identity and background stay the video's.

Scores (``chameleon_core/eval/world.py`` and the write-up's latent garment projection: 1 = the target garment, 0 =
the reference's) are averaged over clips and printed as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from chameleon_core.stream_options import ConditionWeighting, SourceVideo, latent_mask  # noqa: E402
from chameleon_core.session import Session  # noqa: E402
from chameleon_core.streaming import start_stream, with_options  # noqa: E402
from chameleon_core.training.world import experiments as ex  # noqa: E402
from chameleon_core.training.world.pipeline import Layout  # noqa: E402
from chameleon_core.world.codec import load_codec  # noqa: E402
from chameleon_core.world.render import GARMENT_LABEL, render  # noqa: E402

VARIANTS = ("plain", "local_k3", "local_k1", "weighting", "motion_transfer", "tryon_masked")


def stream(model, s, codec, chunks: int, seed: int, variant: str, other_latents, garment_mask):
    latent_frames = model.config.latent.latent_frames(s.clip_frames)
    state = start_stream(model, context=s.text, reference=s.reference, garment=s.garment, seed=seed,
                         settings=ex.stream_settings(latent_frames))
    if variant.startswith("local_k"):
        state = with_options(state, local_frames=int(variant.removeprefix("local_k")))
    elif variant == "weighting":
        state = with_options(state, condition_weights=ConditionWeighting(early_bias=-2.0, late_bias=0.0))
    elif variant == "motion_transfer":
        state = with_options(state, source=SourceVideo(other_latents, 0.83))
    elif variant == "tryon_masked":
        state = with_options(state, source=SourceVideo(other_latents, 0.94, garment_mask))
    out = Session(state, chunks=chunks, codec=codec).run()
    return ex.to_video(torch.cat([c.pixels for c in out], dim=2)), ex.session_latents(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, type=Path)
    p.add_argument("--clips", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    layout = Layout(args.run)
    codec = load_codec(layout.codec)
    student = ex.load_model(layout.run("dmd") / "export" / "student.safetensors")
    samples = ex.load_eval_samples(layout, args.clips)
    rows: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for i, s in enumerate(samples):
        truth = render(s.sample, frames=s.clip_frames)
        other = render(s.sample, frames=s.clip_frames, garment=s.sample.reference_garment)
        z_right, z_other = ex.encode_truth(codec, truth.float_frames()), ex.encode_truth(codec, other.float_frames())
        _, _, lf, h, w = z_other.shape
        mask = (torch.as_tensor(other.labels) == GARMENT_LABEL).float()  # [T, H, W]: the video's garment region
        garment_mask = latent_mask(mask, lf, h, w)
        chunks = lf // ex.CHUNK
        for v in VARIANTS:
            video, z = stream(student, s, codec, chunks, args.seed + i, v, z_other, garment_mask)
            rows[v].append({**ex.clip_scores(video, s, truth),
                            "garment_projection": ex.garment_projection(z, z_right, z_other)})
    keys = ("garment_projection", "garment_accuracy", "identity_error", "motion_agreement", "temporal_jitter",
            "pixel_mse")
    summary = {v: {k: statistics.fmean(r[k] for r in rows[v]) for k in keys} for v in VARIANTS}
    lines = ["| variant | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {v} | " + " | ".join(f"{summary[v][k]:.3f}" for k in keys) + " |" for v in VARIANTS]
    sys.stdout.write("\n".join(lines) + "\n")
    if args.out:
        args.out.write_text(json.dumps({"clips": len(samples), "summary": summary, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
