"""The experiments of the miniature pipeline, scored with the world's exact metrics (issue 10, deliverable 5).

All on held-out samples (identity x garment x motion combinations never seen in training), their conditions read
from the held-out latent cache (the same codec and caption encoder as training) and their ground truth re-rendered
from the metadata. Streams run through the pack's own API: :func:`chameleon_core.streaming.start_stream`,
:class:`chameleon_core.session.Session` (generate -> decode at once -> switch at chunk boundaries) and its
:class:`~chameleon_core.session.GarmentSwitch` (:func:`chameleon_core.rescheduling.switch_garment`'s flags).

1. :func:`teacher_vs_untrained` -- the SFT teacher (UniPC, 50 steps, CFG 3) against the same sampler on the
   untrained initial weights, with two references: the ground truth through the codec (the ceiling any model can
   reach here) and the ground truth in the *reference's* garment (what a model that ignores the garment image gets).
2. :func:`student_vs_teacher` -- the 4-step causal student (after GR-DMD; and after teacher forcing only) streaming
   one training clip against the 50-step teacher: metrics and backbone seconds per clip.
3. :func:`switching` -- a stream of two clips' length with a garment switch at the clip boundary: all three
   rescheduling operations against each ablation and against restarting the stream.
4. :func:`long_stream` -- ``long_factor`` x the training clip, no switch: drift over chunks.

Metric names are those of :mod:`chameleon_core.eval.world` (garment accuracy from the ground-truth garment mask,
leakage, identity error, motion agreement, temporal jitter, switch cut). Two mask-free companions are added here,
because a stream past the training clip need not move exactly as the ground truth does (then the ground-truth masks
cover other pixels): the **target share** (:func:`garment_shares`: among the pixels whose nearest world colour is a
garment colour or its pattern shade, the fraction of the target garment's colour; the **old share** is the same for
the garment before a switch) and the palette reward (:class:`~chameleon_core.training.world.reward.PaletteReward`).

And one metric in latent space, which does not depend on how well the codec decodes: the **garment projection**
(:func:`garment_projection`). The ground truth is encoded twice with the codec, wearing the target garment
(``z_right``) and wearing the other garment (``z_wrong``: the reference's garment, or before a switch the old one),
same person, same motion; the generated latents ``z`` are projected on the difference,
``<z - z_wrong, z_right - z_wrong> / |z_right - z_wrong|^2``: 1 = the target garment, 0 = the other one.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from chameleon_core.config import StreamSettings

if TYPE_CHECKING:
    from .pipeline import Layout, Plan

logger = logging.getLogger(__name__)

CHUNK = 3
"""Latent frames per chunk (the authors' 3; the world's 33-frame clip is three chunks)."""


# -------------------------------------------------------------------------------------------------------------------
# Held-out samples and models
# -------------------------------------------------------------------------------------------------------------------


@dataclass
class EvalSample:
    """One held-out sample: its world metadata and its conditions as training saw them (model-space latents)."""

    key: str
    meta: dict
    reference: torch.Tensor
    """``[1, C, 1, h, w]``."""
    garment: torch.Tensor
    text: torch.Tensor
    """Prompt features of the dynamic caption (motion only: the garment comes from the image) ``[1, L, D]``."""
    empty: torch.Tensor
    """The empty prompt (the teacher's CFG negative, as in training's caption dropout)."""
    video: torch.Tensor
    """The clip's model-space latents ``[1, C, T, h, w]`` (the held-out flow-matching loss)."""

    @property
    def sample(self):
        return self.meta["sample"]

    @property
    def clip_frames(self) -> int:
        return int(self.meta["frames"])


def load_eval_samples(layout: Layout, count: int) -> list[EvalSample]:
    """The first ``count`` rows of the held-out split with their cached conditions and metadata."""
    from safetensors.torch import load_file

    from chameleon_core.training.data import read_train_csv
    from chameleon_core.training.latent_cache import ITEMS
    from chameleon_core.world.dataset import read_metadata

    rows = read_train_csv(layout.world / "test.csv")[:count]
    out = []
    for row in rows:
        t = load_file(str(layout.cache("test") / ITEMS / f"{row.key}.safetensors"))
        out.append(EvalSample(row.key, read_metadata(row.video), t["reference"][None].float(), t["garment"][None].float(),
                              t["text_dynamic"][None].float(), t["text_empty"][None].float(), t["video"][None].float()))
    return out


def load_model(path: Path):
    from chameleon_core.checkpoints import load_transformer

    return load_transformer(path, dtype=torch.float32, device="cpu")


def to_video(pixels: torch.Tensor) -> torch.Tensor:
    """Decoded pixels ``[1, 3, T, H, W]`` in [-1, 1] -> ``[T, H, W, 3]`` in 0..1 (the metrics' layout)."""
    return ((pixels[0].float().permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1)


def garment_image(garment) -> torch.Tensor:
    """The try-off image of a garment as a session takes it: ``[1, H, W, 4]`` RGBA in 0..1."""
    from chameleon_core.world.render import render_garment_on_white

    return render_garment_on_white(garment).float()[None] / 255.0


# -------------------------------------------------------------------------------------------------------------------
# Metrics per chunk
# -------------------------------------------------------------------------------------------------------------------


def chunk_frame_ranges(latent_frames: int, chunk: int = CHUNK) -> list[range]:
    """Pixel frames of each chunk of a causal 4x-temporal decode: latent frame 0 gives 1 frame, later ones 4."""
    pixel = [1 if i == 0 else 4 for i in range(latent_frames)]
    out, start = [], 0
    for c in range(0, latent_frames, chunk):
        n = sum(pixel[c : c + chunk])
        out.append(range(start, start + n))
        start += n
    return out


def garment_shares(video: torch.Tensor, colours: Sequence[str]) -> dict[str, float]:
    """Mask-free: among the pixels whose nearest world palette colour is a garment colour (plain or its pattern
    shade), the fraction of each of ``colours``; NaN when no pixel is garment-coloured."""
    from chameleon_core.world.catalog import GARMENT_COLOUR, PATTERN_SHADE

    from .reward import world_palette

    palette = world_palette()  # [K, 3]
    garment_rgb = {name: torch.tensor(rgb, dtype=torch.float32) / 255.0 for name, rgb in GARMENT_COLOUR.items()}
    owner = []  # per palette entry: the garment colour it belongs to, or None
    for p in palette:
        name = None
        for g, rgb in garment_rgb.items():
            if torch.allclose(p, rgb, atol=1 / 255) or torch.allclose(p, torch.round(rgb * 255 * PATTERN_SHADE) / 255,
                                                                       atol=1 / 255):
                name = g
        owner.append(name)
    names = list(GARMENT_COLOUR)
    owner_index = torch.tensor([names.index(o) if o is not None else -1 for o in owner])
    nearest = owner_index[torch.cdist(video.reshape(-1, 3).float(), palette).argmin(dim=1)]  # [N] garment or -1
    garmentish = int((nearest >= 0).sum())
    if not garmentish:
        return {c: math.nan for c in colours}
    return {c: int((nearest == names.index(c)).sum()) / garmentish for c in colours}


def chunk_series(video: torch.Tensor, truth, *, ranges: Sequence[range], targets: Sequence, old=None) -> list[dict]:
    """Per chunk (pixel frames ``ranges[k]``): garment accuracy against the garment the ground truth wears there,
    identity error, target share (and old share with ``old``), palette reward. ``targets[k]``: chunk k's garment."""
    from chameleon_core.eval.world import garment_accuracy, identity_error

    from .reward import PaletteReward

    reward = PaletteReward()
    frames = truth.float_frames()
    rows = []
    for k, rng in enumerate(ranges):
        sl = slice(rng.start, rng.stop)
        v, labels = video[sl], truth.labels[sl]
        target = targets[k]
        colours = [target.colour] + ([old.colour] if old is not None else [])
        shares = garment_shares(v, colours)
        accuracy = garment_accuracy(v, labels, target)
        row = {
            "chunk": k,
            "garment_accuracy": accuracy["accuracy"],
            "garment_colour": accuracy["colour"],
            "identity_error": identity_error(v, frames[sl], labels)["identity"],
            "target_share": shares[target.colour],
            "reward": float(reward(v.permute(0, 3, 1, 2) * 2 - 1).mean()),
        }
        if old is not None:
            row["old_share"] = shares[old.colour]
        rows.append(row)
    return rows


def clip_scores(video: torch.Tensor, s: EvalSample, truth) -> dict[str, float]:
    """Whole-clip metrics of a video of the sample's own garment (no switch)."""
    from chameleon_core.eval.world import (
        garment_accuracy,
        identity_error,
        motion_agreement,
        temporal_jitter,
    )
    from chameleon_core.world.catalog import BACKGROUND

    from .reward import PaletteReward

    g = garment_accuracy(video, truth.labels, s.sample.garment)
    return {
        "garment_accuracy": g["accuracy"], "garment_colour": g["colour"], "garment_pattern": g["pattern"],
        "identity_error": identity_error(video, truth.float_frames(), truth.labels)["identity"],
        "motion_agreement": motion_agreement(video, truth.float_frames(), BACKGROUND[s.sample.identity.background]),
        "temporal_jitter": temporal_jitter(video),
        "pixel_mse": float((video - truth.float_frames()).pow(2).mean()),
        "reward": float(PaletteReward()(video.permute(0, 3, 1, 2) * 2 - 1).mean()),
    }


HELDOUT_LEVELS = (100, 300, 500, 700, 900)
"""Timestep-table indices of the held-out flow-matching loss (t from ~990 down to ~360 at shift 5)."""


@torch.no_grad()
def heldout_flow_loss(model, samples: Sequence[EvalSample], seed: int) -> float:
    """SFT's objective on held-out clips: the mean over samples, :data:`HELDOUT_LEVELS` and two noise draws of the
    unweighted MSE between the predicted velocity and ``eps - x0`` (dynamic caption, conditions at t = 0). ``model``
    None predicts zero velocity (the baseline a model that learned nothing about the data can always reach)."""
    from chameleon_core.training.flow import fed_timestep, noise_level

    losses = []
    for i, s in enumerate(samples):
        gen = torch.Generator().manual_seed(seed * 1000 + i)
        for index in HELDOUT_LEVELS:
            t, sigma, _ = noise_level(index, 5.0)
            for _ in range(2):
                eps = torch.randn(s.video.shape, generator=gen)
                x_t = (1 - sigma) * s.video + sigma * eps
                if model is None:
                    pred = torch.zeros_like(x_t)
                else:
                    pred = model(x_t, torch.tensor([fed_timestep(t, torch.float32, True)]), s.text,
                                 reference=s.reference, garment=s.garment)
                losses.append(float((pred.float() - (eps - s.video)).pow(2).mean()))
    return statistics.fmean(losses)


def mean_of(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean and sample std of every key over rows (NaNs skipped): ``{key: mean, key_std: std}``."""
    out: dict[str, float] = {}
    for k in rows[0]:
        vals = [r[k] for r in rows if isinstance(r.get(k), (int, float)) and not math.isnan(r[k])]
        if not vals:
            out[k] = math.nan
            continue
        out[k] = statistics.fmean(vals)
        out[f"{k}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return out


# -------------------------------------------------------------------------------------------------------------------
# Generation through the pack's API
# -------------------------------------------------------------------------------------------------------------------


def teacher_clip(model, s: EvalSample, codec, *, steps: int, cfg: float, seed: int
                 ) -> tuple[torch.Tensor, float, torch.Tensor]:
    """The bidirectional teacher's clip (UniPC, shift 5) decoded with the codec; returns (video, backbone seconds,
    model-space latents)."""
    from chameleon_core.decoding import decode_chunks
    from chameleon_core.samplers import sample_teacher

    latent_frames = model.config.latent.latent_frames(s.clip_frames)
    t0 = time.perf_counter()
    with torch.no_grad():
        latents = sample_teacher(model, positive=s.text, negative=s.empty, reference=s.reference, garment=s.garment,
                                 latent_frames=latent_frames, steps=steps, cfg=cfg, shift=5.0, seed=seed)
        seconds = time.perf_counter() - t0
        pixels = torch.cat(list(decode_chunks(codec, latents, CHUNK, family=model.config.latent)), dim=2)
    return to_video(pixels), seconds, latents


def encode_truth(codec, frames: torch.Tensor) -> torch.Tensor:
    """Ground-truth frames ``[T, H, W, 3]`` in 0..1 -> model-space latents ``[1, C, T', h, w]`` (whole-clip encode)."""
    from chameleon_core.latents import WAN22

    with torch.no_grad():
        raw = codec.encode((frames.permute(3, 0, 1, 2)[None] * 2 - 1).to(codec.device, codec.dtype))
    return WAN22.to_model_space(raw.float()).cpu()


def garment_projection(z: torch.Tensor, right: torch.Tensor, wrong: torch.Tensor) -> float:
    """``<z - wrong, right - wrong> / |right - wrong|^2`` over all elements: 1 = ``right``, 0 = ``wrong``."""
    d = (right - wrong).flatten().double()
    return float(torch.dot((z - wrong).flatten().double(), d) / torch.dot(d, d).clamp(min=1e-12))


def stream_settings(clip_latent_frames: int) -> StreamSettings:
    """The student's stream settings: the cache of training's rollout (2 conditions + one clip), sink one chunk."""
    return StreamSettings(chunk_frames=CHUNK, cache_frames=2 + clip_latent_frames, sink_chunks=1, steps=4, shift=5.0)


def stream_clip(model, s: EvalSample, codec, *, chunks: int, seed: int, timeline=(), reference=None,
                garment=None) -> tuple[torch.Tensor, list]:
    """Stream ``chunks`` chunks through :class:`~chameleon_core.session.Session` (decode at once, switches on the
    timeline); returns (video, the session's chunks)."""
    from chameleon_core.session import Session
    from chameleon_core.streaming import start_stream

    latent_frames = model.config.latent.latent_frames(s.clip_frames)
    state = start_stream(model, context=s.text, reference=s.reference if reference is None else reference,
                         garment=s.garment if garment is None else garment, seed=seed,
                         settings=stream_settings(latent_frames))
    out = Session(state, chunks=chunks, codec=codec, timeline=timeline).run()
    return to_video(torch.cat([c.pixels for c in out], dim=2)), out


def session_latents(chunks: list) -> torch.Tensor:
    """The clean model-space latents of a session's chunks, ``[1, C, T, h, w]``."""
    return torch.cat([c.latents for c in chunks], dim=2)


# -------------------------------------------------------------------------------------------------------------------
# The experiments
# -------------------------------------------------------------------------------------------------------------------


def _samples(samples: Sequence[EvalSample], desc: str):
    """``enumerate(samples)`` with a progress bar on a terminal."""
    from .pipeline import progress

    return enumerate(progress(samples, desc))


def teacher_vs_untrained(samples, codec, teacher, untrained, plan: Plan, seed: int) -> tuple[dict, dict]:
    """Experiment 1; returns (summary per model, one example video per model for the strips)."""
    from chameleon_core.decoding import decode_chunks
    from chameleon_core.latents import WAN22
    from chameleon_core.world.render import render

    rows: dict[str, list] = {"teacher_sft": [], "untrained": [], "codec_ceiling": [], "ignores_garment": []}
    examples: dict[str, torch.Tensor] = {}
    for i, s in _samples(samples, "teacher vs untrained"):
        truth = render(s.sample, frames=s.clip_frames)
        gt = truth.float_frames()
        wrong = render(s.sample, frames=s.clip_frames, garment=s.sample.reference_garment).float_frames()
        z_right, z_wrong = encode_truth(codec, gt), encode_truth(codec, wrong)
        for name, model in (("teacher_sft", teacher), ("untrained", untrained)):
            video, _, z = teacher_clip(model, s, codec, steps=plan.teacher_steps, cfg=plan.teacher_cfg, seed=seed + i)
            rows[name].append({**clip_scores(video, s, truth), "garment_projection": garment_projection(z, z_right,
                                                                                                        z_wrong)})
            examples.setdefault(name, video)
        with torch.no_grad():
            ceiling = to_video(torch.cat(list(decode_chunks(codec, z_right, CHUNK, family=WAN22)), dim=2))
        rows["codec_ceiling"].append({**clip_scores(ceiling, s, truth), "garment_projection": 1.0})
        rows["ignores_garment"].append({**clip_scores(wrong, s, truth), "garment_projection": 0.0})
        examples.setdefault("ground_truth", gt)
    summary = {k: mean_of(v) for k, v in rows.items()}
    for name, model in (("teacher_sft", teacher), ("untrained", untrained)):
        summary[name]["heldout_flow_loss"] = heldout_flow_loss(model, samples, seed)
    summary["zero_velocity"] = {"heldout_flow_loss": heldout_flow_loss(None, samples, seed)}
    return summary, examples


def student_vs_teacher(samples, codec, teacher, students: dict, plan: Plan, seed: int) -> tuple[dict, dict]:
    """Experiment 2: each student streams one clip (its chunks through the session); the teacher samples it whole."""
    from chameleon_core.world.render import render

    rows: dict[str, list] = {"teacher_sft": [], **{k: [] for k in students}}
    seconds: dict[str, list[float]] = {k: [] for k in rows}
    examples: dict[str, torch.Tensor] = {}
    for i, s in _samples(samples, "student vs teacher"):
        truth = render(s.sample, frames=s.clip_frames)
        wrong = render(s.sample, frames=s.clip_frames, garment=s.sample.reference_garment).float_frames()
        z_right, z_wrong = encode_truth(codec, truth.float_frames()), encode_truth(codec, wrong)
        latent_frames = teacher.config.latent.latent_frames(s.clip_frames)
        video, sec, z = teacher_clip(teacher, s, codec, steps=plan.teacher_steps, cfg=plan.teacher_cfg, seed=seed + i)
        rows["teacher_sft"].append({**clip_scores(video, s, truth),
                                    "garment_projection": garment_projection(z, z_right, z_wrong)})
        seconds["teacher_sft"].append(sec)
        for name, model in students.items():
            video, chunks = stream_clip(model, s, codec, chunks=latent_frames // CHUNK, seed=seed + i)
            z = session_latents(chunks)
            rows[name].append({**clip_scores(video, s, truth),
                               "garment_projection": garment_projection(z, z_right, z_wrong)})
            seconds[name].append(sum(c.backbone_seconds for c in chunks))
            examples.setdefault(name, video)
    summary = {k: {**mean_of(v), "backbone_seconds_per_clip": statistics.fmean(seconds[k])} for k, v in rows.items()}
    for k in students:
        summary[k]["speedup_vs_teacher"] = summary["teacher_sft"]["backbone_seconds_per_clip"] / \
            summary[k]["backbone_seconds_per_clip"]
    return summary, examples


SWITCH_FLAGS = {
    "all": {},
    "no_refresh": {"refresh": False},
    "no_withdraw": {"withdraw": False},
    "no_disentangle": {"disentangle": False},
    "keep_sink": {"withdraw_sink": False},
}
"""The garment-switch variants: :class:`~chameleon_core.session.GarmentSwitch` flags (defaults: all on)."""


def switch_latency(series: list[dict], switch_chunk: int, key: str = "target_share") -> int | None:
    """Chunks after the switch until the new garment outweighs the old one in a chunk: ``target_share > old_share``
    (pixels), or with ``key="garment_projection"`` a projection above 0.5 (latents). 0 = already in the first chunk
    after the switch; None = not within the stream."""
    for k, row in enumerate(series[switch_chunk:]):
        value = row.get(key, math.nan)
        if math.isnan(value):
            continue
        if (key == "garment_projection" and value > 0.5) or (key != "garment_projection" and value > row.get(
                "old_share", 0.0)):
            return k
    return None


def switching(samples, codec, student, plan: Plan, seed: int) -> tuple[dict, dict, dict]:
    """Experiment 3. A stream of two clips' length; the switch to the sample's ``switch_garment`` (same kind, other
    colour) comes at the clip boundary. ``restart``: a new stream (the user's reference and the new garment) from the
    switch on, its video appended. Returns (summary per variant, mean per-chunk series per variant, examples)."""
    from chameleon_core.eval.world import leakage, motion_agreement, switch_cut
    from chameleon_core.session import GarmentSwitch, TimedSwitch, encode_condition
    from chameleon_core.world.catalog import BACKGROUND
    from chameleon_core.world.render import GARMENT_LABEL, render

    rows: dict[str, list] = {v: [] for v in plan.switch_variants}
    series: dict[str, list] = {v: [] for v in plan.switch_variants}
    examples: dict[str, Any] = {}
    for i, s in _samples(samples, "switching"):
        latent_clip = student.config.latent.latent_frames(s.clip_frames)
        clip_chunks = latent_clip // CHUNK
        chunks, switch_chunk = 2 * clip_chunks, clip_chunks
        ranges = chunk_frame_ranges(chunks * CHUNK)
        switch_frame = ranges[switch_chunk].start
        new = s.meta["switch_garment"]
        targets = [s.sample.garment] * switch_chunk + [new] * (chunks - switch_chunk)
        # Latent references: the whole stream's ground truth wearing only the new / only the old garment.
        z_new, z_old = (encode_truth(codec, render(s.sample, frames=ranges[-1].stop, motion_frames=s.clip_frames,
                                                   garment=g).float_frames()) for g in (new, s.sample.garment))
        for variant in plan.switch_variants:
            video_ranges = ranges
            if variant == "restart":
                # A new stream (and a new decode: its first chunk is 3 frames shorter) from the switch on.
                first, out1 = stream_clip(student, s, codec, chunks=switch_chunk, seed=seed + i)
                size = (first.shape[2], first.shape[1])
                new_latent = encode_condition(codec, student.config.latent, garment_image(new), garment=True, size=size)
                second, out2 = stream_clip(student, s, codec, chunks=chunks - switch_chunk, seed=seed + i + 1000,
                                           garment=new_latent)
                video = torch.cat([first, second])
                z = torch.cat([session_latents(out1), session_latents(out2)], dim=2)
                second_ranges = chunk_frame_ranges((chunks - switch_chunk) * CHUNK)
                video_ranges = ranges[:switch_chunk] + [range(r.start + switch_frame, r.stop + switch_frame)
                                                        for r in second_ranges]
                seconds = math.nan
            else:
                event = GarmentSwitch(image=garment_image(new), label=new.describe(), **SWITCH_FLAGS[variant])
                video, out = stream_clip(student, s, codec, chunks=chunks, seed=seed + i,
                                         timeline=[TimedSwitch(switch_chunk, event)])
                seconds = out[switch_chunk].switches[0].seconds
                z = session_latents(out)
            # The ground truth: the motion continued past the clip (one cycle per training clip), switched.
            truth = render(s.sample, frames=video.shape[0], motion_frames=s.clip_frames, switch_to=new,
                           switch_frame=switch_frame)
            per_chunk = chunk_series(video, truth, ranges=video_ranges, targets=targets, old=s.sample.garment)
            for k, row in enumerate(per_chunk):  # 1 = the new garment, 0 = the old one
                sl = slice(k * CHUNK, (k + 1) * CHUNK)
                row["garment_projection"] = garment_projection(z[:, :, sl], z_new[:, :, sl], z_old[:, :, sl])
            after = per_chunk[switch_chunk:]
            rows[variant].append({
                "garment_accuracy_after": statistics.fmean(r["garment_accuracy"] for r in after),
                "garment_colour_after": statistics.fmean(r["garment_colour"] for r in after),
                "target_share_after": _nanmean(r["target_share"] for r in after),
                "leakage": leakage(video, truth.labels, s.sample.garment.colour, switch_frame),
                "old_share_after": _nanmean(r["old_share"] for r in after),
                "identity_error_before": per_chunk[switch_chunk - 1]["identity_error"],
                "identity_error_after": after[0]["identity_error"],
                "switch_cut": switch_cut(video, switch_frame, keep=truth.labels != GARMENT_LABEL),
                "motion_agreement": motion_agreement(video, truth.float_frames(), BACKGROUND[s.sample.identity.background]),
                "garment_projection_before": statistics.fmean(r["garment_projection"] for r in per_chunk[:switch_chunk]),
                "garment_projection_after": statistics.fmean(r["garment_projection"] for r in after),
                "garment_projection_first_chunk": after[0]["garment_projection"],
                "latency_chunks": _latency_value(switch_latency(per_chunk, switch_chunk, "garment_projection"),
                                                 chunks - switch_chunk),
                "latency_chunks_pixels": _latency_value(switch_latency(per_chunk, switch_chunk),
                                                        chunks - switch_chunk),
                "switch_seconds": seconds,
            })
            series[variant].append(per_chunk)
            if i == 0:
                examples[variant] = video
        if i == 0:
            examples["ground_truth"] = render(s.sample, frames=ranges[-1].stop, motion_frames=s.clip_frames,
                                              switch_to=new, switch_frame=switch_frame).float_frames()
            examples["switch_frame"] = switch_frame
    summary = {v: mean_of(r) for v, r in rows.items()}
    mean_series = {v: [mean_of([run[k] for run in runs]) for k in range(len(runs[0]))] for v, runs in series.items()}
    return summary, mean_series, examples


def _nanmean(values) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return statistics.fmean(vals) if vals else math.nan


def _latency_value(latency: int | None, chunks_after: int) -> float:
    """Latency as a number for averaging: ``chunks_after`` (one past the stream) when the switch never took hold."""
    return float(chunks_after if latency is None else latency)


def long_stream(samples, codec, student, plan: Plan, seed: int) -> tuple[dict, list, torch.Tensor]:
    """Experiment 4: ``plan.long_factor`` clips' length without a switch; per-chunk metrics and their drift (mean of
    the last clip's chunks minus the first clip's)."""
    from chameleon_core.world.render import render

    runs = []
    example = None
    for i, s in _samples(samples, "long stream"):
        latent_clip = student.config.latent.latent_frames(s.clip_frames)
        chunks = plan.long_factor * latent_clip // CHUNK
        video, out = stream_clip(student, s, codec, chunks=chunks, seed=seed + i)
        truth = render(s.sample, frames=video.shape[0], motion_frames=s.clip_frames)
        rows = chunk_series(video, truth, ranges=chunk_frame_ranges(chunks * CHUNK), targets=[s.sample.garment] * chunks)
        z = session_latents(out)
        z_right = encode_truth(codec, truth.float_frames())
        z_wrong = encode_truth(codec, render(s.sample, frames=video.shape[0], motion_frames=s.clip_frames,
                                             garment=s.sample.reference_garment).float_frames())
        for k, row in enumerate(rows):  # 1 = the stream's garment, 0 = the reference image's garment
            sl = slice(k * CHUNK, (k + 1) * CHUNK)
            row["garment_projection"] = garment_projection(z[:, :, sl], z_right[:, :, sl], z_wrong[:, :, sl])
        runs.append(rows)
        if example is None:
            example = video
    mean_series = [mean_of([run[k] for run in runs]) for k in range(len(runs[0]))]
    clip_chunks = len(mean_series) // plan.long_factor
    first, last = mean_series[:clip_chunks], mean_series[-clip_chunks:]
    keys = ("garment_projection", "garment_accuracy", "identity_error", "target_share", "reward")
    drift = {k: {"first_clip": _nanmean(r[k] for r in first), "last_clip": _nanmean(r[k] for r in last)}
             for k in keys}
    for k in keys:
        drift[k]["change"] = drift[k]["last_clip"] - drift[k]["first_clip"]
    return drift, mean_series, example


def run_all(layout: Layout, plan: Plan, *, seed: int = 0) -> dict[str, Any]:
    """Every experiment, its plots under ``layout.plots``; returns the results (plots named in ``plots``)."""
    from chameleon_core.world.codec import load_codec

    from . import plots

    codec = load_codec(layout.codec)
    samples = load_eval_samples(layout, plan.eval_samples)
    teacher, untrained = load_model(layout.teacher), load_model(layout.init)
    student, forcing = load_model(layout.student), load_model(layout.forcing_student)
    results: dict[str, Any] = {"eval_samples": [s.key for s in samples]}
    logger.info("experiment 1: teacher after SFT vs untrained (%d held-out samples)", len(samples))
    results["teacher_vs_untrained"], ex1 = teacher_vs_untrained(samples, codec, teacher, untrained, plan, seed)
    logger.info("experiment 2: 4-step student vs %d-step teacher", plan.teacher_steps)
    streams = samples[: plan.stream_samples]
    results["student_vs_teacher"], ex2 = student_vs_teacher(
        streams, codec, teacher, {"student_dmd": student, "student_forcing": forcing}, plan, seed)
    logger.info("experiment 3: garment switching, %s", ", ".join(plan.switch_variants))
    results["switching"], switch_series, ex3 = switching(streams, codec, student, plan, seed)
    logger.info("experiment 4: a stream %dx the training clip", plan.long_factor)
    results["long_stream"], long_series, ex4 = long_stream(samples[: plan.long_samples], codec, student, plan, seed)
    results["series"] = {"switching": switch_series, "long_stream": long_series}
    results["plots"] = plots.write_all(layout.plots, ex1=ex1, ex2=ex2, ex3=ex3, ex4=ex4, switch_series=switch_series,
                                       long_series=long_series, clip_chunks=len(long_series) // plan.long_factor)
    return results
