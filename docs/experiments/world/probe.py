"""Probe world models quickly: the recipe measurements of docs/experiments/world.md ("What moved the numbers").

    python docs/experiments/world/probe.py --run runs/world --clips 16 student A.safetensors B.safetensors ...
    python docs/experiments/world/probe.py --run runs/world --clips 8 teacher T.safetensors --cfg 1 3
    python docs/experiments/world/probe.py --run runs/world --clips 16 long A.safetensors --chunks 6
    python docs/experiments/world/probe.py --run runs/world --clips 32 timing
    python docs/experiments/world/probe.py --run runs/world --clips 16 switch_at S.safetensors --chunk 2
    python docs/experiments/world/probe.py --run runs/world --clips 16 identity S.safetensors --split test train
    python docs/experiments/world/probe.py --run runs/world --clips 32 teacher_switch T.safetensors --cfg 1
    python docs/experiments/world/probe.py --run runs/world --clips 32 --prompt full switching S.safetensors

``student``: each model streams the first ``--clips`` held-out clips of the run's cache (3 chunks, the world
experiments' settings, seed = clip index) and is scored with ``eval.world``; also the RMS distance of its latents
from the clip's own (model space). ``teacher``: the bidirectional teacher (50 UniPC steps) at each guidance.
``long``: a stream of ``--chunks`` chunks without a switch, garment colour and identity error per chunk (past the
third chunk the stream is longer than every training clip). ``timing``: no model -- the switch experiment's ground
truth scored against itself drawn late after the switch (a picture late: the decode that showed a new clip's first
latent frame as four held frames; one frame late: that frame shown once; on time), the ceiling each way of showing
the switch allows. ``switch_at``: the switch experiment's ``all`` and ``no_disentangle`` variants with the switch at
chunk ``--chunk`` instead of the clip boundary (where the user's reference happens to show the pose of the switch
frame: the motions loop once per clip), and where the identity error goes across the ``all`` switch: the chunk
before, the last shown frame (what disentangle takes), that frame after the codec's round trip (the new
reference), the first chunk after; and what it is made of: what the truth's skin and hair pixels are drawn as
before and after (the person's own colour, another person's, the scene ...), the error picture by picture, and the
tone error (the RGB distance of the mean skin / hair colour drawn from the person's) at each step. ``identity``:
the identity error of a 3-chunk stream on the first ``--clips`` clips of each ``--split`` (``train``: combinations
training saw), in the first frame (which re-draws the reference's pose in the clip's garment) and over the clip,
beside the codec's reconstruction, the ground truth moved by one pixel (how much of the error a misplaced figure
explains) and the clip's latents plus Gaussian noise of the student's own RMS distance from them (how much
imprecision explains). ``teacher_switch``: the bidirectional teacher through the same disentangled switch (its next
clip's reference is its last frame re-encoded). ``switching``: experiment 3 itself (``experiments.switching``) on a
student file alone, with the full run's variants for ``--prompt dynamic`` and its ``described_variants`` for
``--prompt full``, and the controls; ``--json`` writes its results. Every mode streams with ``--prompt``'s caption
(default the motion only, as the experiments; ``full`` also names the person's skin, hair, face and wall, never
the garment). Models load as the experiments load them; nothing is written but ``--json``.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import logging
import math
import sys
from pathlib import Path

import numpy as np
import torch

from chameleon_core.eval.world import (
    GroundTruth,
    classify,
    garment_colour_accuracy,
    identity_scores,
    score_video,
)
from chameleon_core.latents import to_raw
from chameleon_core.session import Session
from chameleon_core.training.world import experiments as ex
from chameleon_core.training.world.pipeline import Layout
from chameleon_core.world import catalog
from chameleon_core.world.catalog import palette
from chameleon_core.world.codec import load_codec
from chameleon_core.world.render import HAIR_LABEL, SKIN_LABEL

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


def _mean_row(rows: list[dict], keys=("colour_first_chunk", "identity_change", "motion_agreement", "switch_cut")
              ) -> str:
    return " ".join(f"{k} {np.mean([r[k] for r in rows]):.3f}" for k in keys)


def switch_timing(samples) -> None:
    import dataclasses

    chunks, switch_chunk = 6, 3
    for name, late, held in (("a picture late", 4, False), ("one frame late", 0, True), ("on time", 0, False)):
        rows = []
        for s in samples:
            ranges = ex.chunk_frame_ranges(chunks * ex.CHUNK, clip_starts=(switch_chunk * ex.CHUNK,))
            at, new = ranges[switch_chunk].start, s.meta["switch_garment"]
            truth = GroundTruth(s.sample, size=s.size, frames=ranges[-1].stop, switch_to=new, switch_frame=at)
            if held:  # the new clip's first frame shown once: the clip drawn from the switch frame's pose on
                tail = GroundTruth(dataclasses.replace(s.sample, phase=s.sample.phase + at - 1, garment=new),
                                   size=s.size, frames=truth.frames - at).video
            else:
                tail = GroundTruth(dataclasses.replace(s.sample, phase=s.sample.phase - late), size=s.size,
                                   frames=truth.frames, switch_to=new, switch_frame=at).video[at:]
            video = torch.cat([truth.video[:at], tail])
            rows.append(ex._switch_row(video, truth, ranges, switch_chunk, 0.0))
        logger.info("ground truth %s: %s", name, _mean_row(rows))


def switch_at(samples, codec, path: str, chunk: int) -> None:
    from chameleon_core.latents import WAN22
    from chameleon_core.rescheduling import reference_from_frame
    from chameleon_core.session import GarmentSwitch, TimedSwitch

    model = ex.load_model(Path(path))
    rows: dict[str, list[dict]] = {"all": [], "no_disentangle": []}
    chain: dict[str, list[float]] = {"last shown frame": [], "its codec round trip (the new reference)": []}
    detail = _IdentityDetail()
    for i, s in enumerate(samples):
        ranges = ex.chunk_frame_ranges((chunk + 3) * ex.CHUNK, clip_starts=(chunk * ex.CHUNK,))
        at, new = ranges[chunk].start, s.meta["switch_garment"]
        truth = GroundTruth(s.sample, size=s.size, frames=ranges[-1].stop, switch_to=new, switch_frame=at)
        head_session = Session(ex.start(model, s, seed=i), chunks=chunk, codec=codec)
        head = ex.to_video(torch.cat([c.pixels for c in head_session.run()], dim=2))
        # the frame disentangle takes, and that frame as the new reference shows it (decoded back as an image)
        with torch.no_grad():
            trip = ex.to_video(codec.decode(WAN22.to_raw(reference_from_frame(
                codec, WAN22, head[-1].permute(2, 0, 1)[None] * 2 - 1))))
        for name, v in zip(chain, (head[-1:], trip)):
            chain[name].append(identity_scores(v, truth.labels[at - 1:at], s.sample)["identity_error"])
        for variant, out in rows.items():
            event = GarmentSwitch(image=ex.garment_image(new), label=new.describe(), **ex.SWITCH_FLAGS[variant])
            tail = Session(head_session.state, chunks=3, codec=codec, timeline=[TimedSwitch(0, event)],
                           continue_decode=head_session.decoder).run()
            video = torch.cat([head, ex.to_video(torch.cat([c.pixels for c in tail], dim=2))])
            out.append(ex._switch_row(video, truth, ranges, chunk, 0.0))
            if variant == "all":
                detail.add(video, truth, ranges, chunk, trip, s.sample)
    for variant, out in rows.items():
        logger.info("%s, switch at chunk %d: %s", variant, chunk, _mean_row(out))
    detail.log()
    from chameleon_core.training.world import stats

    metrics = ("colour_first_chunk", "identity_change", "motion_agreement")
    effect = stats.effects(rows, {"disentangle": ("all", "no_disentangle")}, metrics, seed=0)["disentangle"]
    logger.info("paired effect of disentangle: %s", ", ".join(
        f"{k} {effect[k]['mean']:+.3f} [{effect[k]['low']:.3f}, {effect[k]['high']:.3f}]" for k in metrics))
    # where the identity error goes across the switch with all three operations (paired steps, 95% intervals)
    steps = {"the chunk before the switch": [r["identity_error_before"] for r in rows["all"]], **chain,
             "the first chunk after it": [r["identity_error_after"] for r in rows["all"]]}
    _log_identity_steps("", steps)


class _IdentityDetail:
    """What the identity error of a switched stream is made of (the ``all`` switch of ``switch_at``): what the ground
    truth's skin and hair pixels are drawn as in the chunk before the switch and the first chunk after it (the person's
    own colour, another person's colour of that part, the other part's colours, a garment colour, the scene, the
    trousers); the identity error picture by picture (four frames each); and the tone error, the RGB distance (0-255)
    of the mean colour drawn on each part's pixels from the person's palette colour, at each step of the switch."""

    PARTS = (("skin", SKIN_LABEL), ("hair", HAIR_LABEL))

    def __init__(self) -> None:
        self.outcomes = {k: collections.Counter() for k in ("the chunk before", "the first chunk after")}
        self.pictures: list[list[float]] = []
        self.tones: dict[str, list[float]] = collections.defaultdict(list)

    def _outcome(self, entry, part: str, own: str) -> str:
        if entry.kind == part:
            return "own colour" if entry.name == own else f"another person's {part}"
        if entry.kind in ("skin", "hair"):
            return f"a {entry.kind} colour"
        if entry.kind in ("garment", "mark"):
            return "a garment colour"
        return "the scene" if entry.kind in ("wall", "pole") else entry.kind

    def _tone(self, video, labels, sample) -> float:
        out = []
        for part, label in self.PARTS:
            mask = labels == label
            if mask.any():
                own = torch.tensor(getattr(catalog, part.upper())[getattr(sample.identity, part)], dtype=torch.float32)
                out.append(float((video[mask].mean(0) * 255 - own).norm()))
        return float(np.mean(out)) if out else math.nan

    def add(self, video, truth, ranges, chunk: int, trip, sample) -> None:
        at = ranges[chunk].start
        entries = palette()
        for name, r in zip(self.outcomes, (ranges[chunk - 1], ranges[chunk])):
            cls, labels = classify(video[r.start:r.stop]), truth.labels[r.start:r.stop]
            for part, label in self.PARTS:
                own = getattr(sample.identity, part)
                for idx, n in zip(*torch.unique(cls[labels == label], return_counts=True)):
                    self.outcomes[name][(part, self._outcome(entries[int(idx)], part, own))] += int(n)
        starts = list(range(ranges[chunk - 1].start, ranges[chunk].stop, 4))
        self.pictures.append([identity_scores(video[f:f + 4], truth.labels[f:f + 4], sample)["identity_error"]
                              for f in starts])
        before = slice(ranges[chunk - 1].start, at)
        for name, v, labels in (("the chunk before", video[before], truth.labels[before]),
                                ("the last shown frame", video[at - 1:at], truth.labels[at - 1:at]),
                                ("its round trip", trip, truth.labels[at - 1:at]),
                                ("1st picture after", video[at:at + 4], truth.labels[at:at + 4]),
                                ("2nd picture after", video[at + 4:at + 8], truth.labels[at + 4:at + 8])):
            self.tones[name].append(self._tone(v, labels, sample))

    def log(self) -> None:
        for name, counts in self.outcomes.items():
            for part, _ in self.PARTS:
                total = sum(n for (p, _), n in counts.items() if p == part)
                shares = sorted(((n / total, o) for (p, o), n in counts.items() if p == part), reverse=True)
                logger.info("%s pixels, %s: %s", part, name, ", ".join(f"{o} {v:.3f}" for v, o in shares if v >= 0.005))
        logger.info("identity error by picture, the chunk before then the first after: %s",
                    " ".join(f"{v:.3f}" for v in np.nanmean(np.array(self.pictures, dtype=float), axis=0)))
        logger.info("tone error (RGB distance of the mean skin / hair colour from the person's): %s",
                    ", ".join(f"{k} {np.nanmean(v):.1f}" for k, v in self.tones.items()))


def _log_identity_steps(who: str, steps: dict[str, list[float]]) -> None:
    """The mean identity error at each step of a chain, and each step's paired change (bootstrap 95% interval)."""
    from chameleon_core.training.world import stats

    for a, b in itertools.pairwise(steps):
        d = stats.bootstrap([y - x for x, y in zip(steps[a], steps[b])], seed=0)
        logger.info("%sidentity error %s %.3f -> %s %.3f: %+.3f [%.3f, %.3f]", who, a, np.mean(steps[a]), b,
                    np.mean(steps[b]), d.mean, d.low, d.high)


def teacher_switch(samples, codec, path: str, cfg: float) -> None:
    """The teacher through a disentangled switch at the clip boundary: its clip from the user's reference, then a clip
    whose reference is that clip's last frame re-encoded (as disentangle makes it) in the new garment, scored where the
    switch experiment scores (its 65-frame ground truth; the second clip's first frame, which re-draws the reference,
    not shown). Is the identity lost in re-drawing a self-made reference the distillation's or the teacher's?"""
    from chameleon_core.decoding import decode_chunks
    from chameleon_core.latents import WAN22
    from chameleon_core.rescheduling import reference_from_frame
    from chameleon_core.samplers import sample_teacher
    from chameleon_core.training.world import stats

    model = ex.load_model(Path(path))
    steps: dict[str, list[float]] = {"the clip's last chunk": [], "its last frame": [],
                                     "the next clip's first chunk": []}
    clean: list[float] = []

    def clip(s, frames, reference, garment, seed):
        with torch.no_grad():
            latents = sample_teacher(model, positive=s.text, negative=s.empty, reference=reference, garment=garment,
                                     latent_frames=frames, steps=50, cfg=cfg, shift=5.0, seed=seed)
            return ex.to_video(torch.cat(list(decode_chunks(codec, latents, ex.CHUNK, family=model.config.latent)),
                                         dim=2))

    for i, s in enumerate(samples):
        frames = model.config.latent.latent_frames(s.clip_frames)
        ranges = ex.chunk_frame_ranges(frames)
        at, new = ranges[-1].stop, s.meta["switch_garment"]
        truth = GroundTruth(s.sample, size=s.size, frames=2 * at - 1, switch_to=new, switch_frame=at)
        first = clip(s, frames, s.reference, s.garment, i)
        with torch.no_grad():
            reference = reference_from_frame(codec, WAN22, first[-1].permute(2, 0, 1)[None] * 2 - 1)
        second = clip(s, frames, reference, ex.encode_garment(codec, new, s.size), i + 1000)
        shown = ranges[0].stop - 1  # the first chunk's frames after the re-drawn one
        last = slice(ranges[-1].start, at)
        for name, (v, labels) in zip(steps, ((first[last], truth.labels[last]),
                                             (first[-1:], truth.labels[at - 1:at]),
                                             (second[1:1 + shown], truth.labels[at:at + shown]))):
            steps[name].append(identity_scores(v, labels, s.sample)["identity_error"])
        clean.append(identity_scores(first[1:1 + shown], truth.labels[1:1 + shown], s.sample)["identity_error"])
    logger.info("teacher, first chunk from the user's reference: identity error %.3f", np.mean(clean))
    _log_identity_steps("teacher, ", steps)
    d = stats.bootstrap([y - x for x, y in zip(steps["the clip's last chunk"], steps["the next clip's first chunk"])],
                        seed=0)
    logger.info("teacher, identity change across the switch: %+.3f [%.3f, %.3f]", d.mean, d.low, d.high)


def identity(layout, codec, path: str, splits: list[str], count: int) -> None:
    model = ex.load_model(Path(path))
    for split in splits:
        rows: dict[str, list[tuple[float, float]]] = {"student": [], "codec": [], "truth one pixel off": [],
                                                      "clip latents + noise at the student's distance": []}
        noise = torch.Generator().manual_seed(0)
        for i, s in enumerate(ex.load_eval_samples(layout, count, split)):
            out = Session(ex.start(model, s, seed=i), chunks=3, codec=codec).run()
            video = ex.to_video(torch.cat([c.pixels for c in out], dim=2))
            gt = GroundTruth(s.sample, size=s.size, frames=video.shape[0])
            distance = (torch.cat([c.latents for c in out], dim=2) - s.video).pow(2).mean().sqrt()
            with torch.no_grad():  # unstructured error of the same size: does imprecision explain the identity?
                noisy = s.video + distance * torch.randn(s.video.shape, generator=noise)
                noisy = ex.to_video(codec.decode(to_raw(noisy).to(codec.dtype)))
            for name, v in (("student", video), ("codec", ex.codec_ceiling(codec, gt)),
                            ("truth one pixel off", torch.roll(gt.video, 1, dims=2)),
                            ("clip latents + noise at the student's distance", noisy)):
                rows[name].append((identity_scores(v[:1], gt.labels[:1], s.sample)["identity_error"],
                                   identity_scores(v, gt.labels, s.sample)["identity_error"]))
        for name, r in rows.items():
            first, whole = np.nanmean(np.array(r, dtype=float), axis=0)
            logger.info("%s, %s clips: identity error first frame %.3f, whole clip %.3f", name, split, first, whole)


def switching(samples, codec, path: str, prompt: str, out: str | None) -> None:
    import json

    from chameleon_core.training.world import stats
    from chameleon_core.training.world.pipeline import FULL

    variants = [*(FULL.described_variants if prompt == "full" else FULL.switch_variants), *ex.CONTROLS]
    results, _ = ex.switching(samples, codec, ex.load_model(Path(path)), FULL, 0, variants=variants)
    for variant, m in results["summary"].items():
        logger.info("%s: %s", variant, ", ".join(
            f"{k} {stats.cell(m[k])}" for k in ("colour_first_chunk", "leakage_first_chunk", "identity_error_before",
                                                "identity_change", "motion_agreement")))
    for name, m in results["effects"].items():
        logger.info("paired effect of %s: %s", name, ", ".join(
            f"{k} {stats.cell(m[k])}" for k in ("colour_first_chunk", "identity_change", "motion_agreement")))
    if out:
        Path(out).write_text(json.dumps({"model": path, "prompt": prompt, **results}, indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a world run folder (its held-out cache and codec)")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("what", choices=("student", "teacher", "long", "timing", "switch_at", "identity",
                                         "teacher_switch", "switching"))
    parser.add_argument("models", nargs="*")
    parser.add_argument("--cfg", type=float, nargs="+", default=[1.0, 3.0], help="teacher: guidances")
    parser.add_argument("--chunks", type=int, default=6, help="long: chunks to stream")
    parser.add_argument("--chunk", type=int, default=2, help="switch_at: the chunk boundary to switch at")
    parser.add_argument("--split", nargs="+", default=["test", "train"], choices=("test", "train"),
                        help="identity: the splits to stream")
    parser.add_argument("--prompt", choices=ex.PROMPTS, default="dynamic",
                        help="the streams' caption: dynamic (the motion, as every experiment) or full (also the "
                             "person's skin, hair, face and wall; never the garment)")
    parser.add_argument("--json", default=None, help="switching: write its results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    layout = Layout(Path(args.run), 0)
    samples = ex.load_eval_samples(layout, args.clips, prompt=args.prompt)
    codec = load_codec(layout.codec)
    if args.what == "student":
        students(samples, codec, args.models)
    elif args.what == "teacher":
        for path in args.models:
            teachers(samples, codec, path, args.cfg)
    elif args.what == "long":
        long_streams(samples, codec, args.models, args.chunks)
    elif args.what == "timing":
        switch_timing(samples)
    elif args.what == "identity":
        for path in args.models:
            identity(layout, codec, path, args.split, args.clips)
    elif args.what == "teacher_switch":
        for path in args.models:
            teacher_switch(samples, codec, path, args.cfg[0])
    elif args.what == "switching":
        for path in args.models:
            switching(samples, codec, path, args.prompt, args.json)
    else:
        for path in args.models:
            switch_at(samples, codec, path, args.chunk)
    return 0


if __name__ == "__main__":
    sys.exit(main())
