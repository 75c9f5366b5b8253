"""The experiments of the miniature pipeline, scored with the world's exact metrics, each with controls that must
score low.

All on held-out samples (combinations of skin, hair, garment colour, pattern and motion never seen in training),
their conditions read from the held-out latent cache (the codec and caption encoder of training) and their ground
truth re-rendered from the metadata. Streams run through the pack's own API:
:func:`chameleon_core.streaming.start_stream`, :class:`chameleon_core.session.Session` (generate -> decode at once ->
switch at chunk boundaries) and its :class:`~chameleon_core.session.GarmentSwitch`. The prompt is the clip's dynamic
caption (the motion only; experiment 3 also runs with the full caption, which describes the person) and the world's
captions carry no garment words, so the garment can come from nowhere but the garment image.

Every table carries three controls (:data:`CONTROLS`): a **constant frame** (every pixel the clip's mean colour),
the **codec's reconstruction of the ground truth** (the ceiling any model can reach here) and the **model given a
shuffled garment image** (another held-out sample's garment, of another colour, scored against the right one; a
model that follows the garment image scores low). The switching table also has ``no_refresh``, which must fail to
switch. Values are means over clips with bootstrap 95% intervals (:mod:`.stats`); effects are paired differences
over the same clips and seeds.

1. :func:`teacher_vs_untrained` -- the SFT teacher (UniPC, CFG) against the same sampler on the initial weights.
2. :func:`student_vs_teacher` -- the 4-step causal student (after GR-DMD, and after teacher forcing) streaming one
   training clip, against the teacher: metrics and backbone seconds per clip.
3. :func:`switching` -- a stream of two clips' length switching garment at the clip boundary (video frame 33):
   all three rescheduling operations, each ablation, a restart, and the controls; then again with the prompt
   describing the person (``switching_described``: the full caption, still no garment words; all three operations,
   no refresh, no disentangle, another person's caption, and the controls).
4. :func:`long_stream` -- ``long_factor`` x the training clip without a switch: drift per chunk.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from chameleon_core.config import StreamSettings
from chameleon_core.frames import chunk_video_ranges
from chameleon_core.session import GarmentSwitch, Session, TimedSwitch
from chameleon_core.eval.world import (
    GroundTruth,
    garment_colour_accuracy,
    identity_scores,
    leakage,
    score_video,
)

from . import stats
from .controls import other_person, other_person_prompt, shuffled_garment

if TYPE_CHECKING:
    from .pipeline import Layout, Plan

logger = logging.getLogger(__name__)

CHUNK = 3
"""Latent frames per chunk (the authors' 3; the world's 33-frame clip is three chunks)."""
CONTROLS = ("constant_frame", "codec_ceiling", "shuffled_garment")
SWITCH_FLAGS = {
    "all": {},
    "no_refresh": {"refresh": False},
    "no_withdraw": {"withdraw": False},
    "no_disentangle": {"disentangle": False},
    "keep_sink": {"withdraw_sink": False},
}
"""Garment-switch variants as :class:`~chameleon_core.session.GarmentSwitch` flags (defaults: all three on)."""
EFFECTS = {
    "refresh": ("all", "no_refresh"),
    "withdraw": ("all", "no_withdraw"),
    "disentangle": ("all", "no_disentangle"),
    "withdraw the sink too": ("all", "keep_sink"),
    "switch instead of restart": ("all", "restart"),
}
"""Paired effects reported for the switch: (with, without)."""
SWITCH_METRICS = ("colour_first_chunk", "colour_after", "leakage_first_chunk", "leakage_after", "colour_before",
                  "identity_error_before", "identity_error_after", "identity_change", "motion_agreement",
                  "switch_cut", "not_garment_after")


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
    """Prompt features of the caption the stream is given (:data:`PROMPTS`; the dynamic one, the motion only, in every
    experiment) ``[1, L, D]``."""
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

    @property
    def size(self) -> int:
        return int(self.meta["size"])


PROMPTS = ("dynamic", "full")
"""Prompt variants a stream can be given: the dynamic caption (the motion; every experiment's), or the full caption
(the motion and the person: skin, hair, face, wall; never the garment), as a user who describes the person writes."""


def load_eval_samples(layout: Layout, count: int, split: str = "test", prompt: str = "dynamic") -> list[EvalSample]:
    """The first ``count`` rows of the held-out split (or of ``split``: ``train`` for a probe of what training saw)
    with their cached conditions and metadata; ``prompt`` picks the caption of :data:`PROMPTS`."""
    from safetensors.torch import load_file

    from chameleon_core.training.data import read_train_csv
    from chameleon_core.training.latent_cache import ITEMS
    from chameleon_core.world.dataset import read_metadata

    if prompt not in PROMPTS:
        raise ValueError(f"prompt must be one of {PROMPTS}, got {prompt!r}")
    rows = read_train_csv(layout.world / f"{split}.csv")
    if len(rows) < count:
        raise ValueError(f"the {split} split has {len(rows)} clips but {count} were asked for; raise "
                         f"Plan.{split}_samples")
    out = []
    for row in rows[:count]:
        t = load_file(str(layout.cache(split) / ITEMS / f"{row.key}.safetensors"))
        out.append(EvalSample(row.key, read_metadata(row.video), t["reference"][None].float(),
                              t["garment"][None].float(), t[f"text_{prompt}"][None].float(),
                              t["text_empty"][None].float(), t["video"][None].float()))
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


def encode_garment(codec, garment, size: int) -> torch.Tensor:
    """A world garment's try-off image as the model-space one-frame latent a stream or the teacher takes."""
    from chameleon_core.latents import WAN22
    from chameleon_core.session import encode_condition

    return encode_condition(codec, WAN22, garment_image(garment), garment=True, size=(size, size))


def chunk_frame_ranges(latent_frames: int, chunk: int = CHUNK, clip_starts: tuple[int, ...] = ()) -> list[range]:
    """Pixel frames of each chunk of a causal 4x-temporal decode, later clips opening at ``clip_starts``
    (:func:`chameleon_core.frames.chunk_video_ranges`)."""
    return chunk_video_ranges(latent_frames, chunk, clip_starts=clip_starts)


# -------------------------------------------------------------------------------------------------------------------
# Generation through the pack's API, and the controls
# -------------------------------------------------------------------------------------------------------------------


def teacher_clip(model, s: EvalSample, codec, *, steps: int, cfg: float, seed: int,
                 garment: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """The bidirectional teacher's clip (UniPC, shift 5) decoded with the codec: (video, backbone seconds)."""
    from chameleon_core.decoding import decode_chunks
    from chameleon_core.samplers import sample_teacher

    latent_frames = model.config.latent.latent_frames(s.clip_frames)
    t0 = time.perf_counter()
    with torch.no_grad():
        latents = sample_teacher(model, positive=s.text, negative=s.empty, reference=s.reference,
                                 garment=s.garment if garment is None else garment, latent_frames=latent_frames,
                                 steps=steps, cfg=cfg, shift=5.0, seed=seed)
        seconds = time.perf_counter() - t0
        pixels = torch.cat(list(decode_chunks(codec, latents, CHUNK, family=model.config.latent)), dim=2)
    return to_video(pixels), seconds


def stream_settings(clip_latent_frames: int) -> StreamSettings:
    """The student's stream settings: the cache of training's rollout (2 conditions + one clip), sink one chunk."""
    return StreamSettings(chunk_frames=CHUNK, cache_frames=2 + clip_latent_frames, sink_chunks=1, steps=4, shift=5.0)


def stream_clip(model, s: EvalSample, codec, *, chunks: int, seed: int, timeline=(), reference=None,
                garment=None) -> tuple[torch.Tensor, list]:
    """Stream ``chunks`` chunks through :class:`~chameleon_core.session.Session` (decode at once, switches on the
    timeline); returns (video, the session's chunks)."""
    session = Session(start(model, s, seed=seed, reference=reference, garment=garment), chunks=chunks, codec=codec,
                      timeline=timeline)
    out = session.run()
    return to_video(torch.cat([c.pixels for c in out], dim=2)), out


def start(model, s: EvalSample, *, seed: int, reference=None, garment=None):
    """The sample's stream: its dynamic caption, its reference and garment (or the given latents)."""
    from chameleon_core.streaming import start_stream

    latent_frames = model.config.latent.latent_frames(s.clip_frames)
    return start_stream(model, context=s.text, reference=s.reference if reference is None else reference,
                        garment=s.garment if garment is None else garment, seed=seed,
                        settings=stream_settings(latent_frames))


def constant_frame(truth: GroundTruth) -> torch.Tensor:
    """The constant-frame control: every pixel of every frame the ground truth's mean colour."""
    return truth.video.reshape(-1, 3).mean(0).expand_as(truth.video).clone()


def codec_ceiling(codec, truth: GroundTruth) -> torch.Tensor:
    """The ceiling: the ground truth through the codec (whole-clip encode and decode)."""
    from chameleon_core.world.codec import reconstruct

    return reconstruct(codec, truth.video)


# -------------------------------------------------------------------------------------------------------------------
# Experiments
# -------------------------------------------------------------------------------------------------------------------


def _progress(samples: Sequence[EvalSample], desc: str):
    """``enumerate(samples)`` with a progress bar on a terminal."""
    from .pipeline import progress

    return enumerate(progress(samples, desc))


CLIP_METRICS = ("garment_colour", "garment_pattern", "not_garment", "identity_error", "identity_skin",
                "identity_hair", "motion_agreement", "motion_correct", "temporal_jitter")


def _clip_row(video: torch.Tensor, truth: GroundTruth) -> dict[str, float]:
    scores = score_video(video, truth)
    return {k: scores[k] for k in CLIP_METRICS}


def compare_clips(samples: Sequence[EvalSample], codec, makers: dict[str, Callable], *, seed: int,
                  shuffled: tuple[str, Callable] | None, desc: str) -> tuple[dict, dict, dict]:
    """Score every ``makers[name](sample, index, garment_latent) -> (video, seconds)`` on every sample, plus the
    controls (the shuffled one runs ``shuffled = (name, maker)`` with another sample's garment). Returns
    (summary with intervals, per-clip rows, the first clip's videos for the strips)."""
    rows: dict[str, list[dict]] = {name: [] for name in makers}
    rows.update({c: [] for c in CONTROLS if c != "shuffled_garment" or shuffled})
    seconds: dict[str, list[float]] = {name: [] for name in makers}
    examples: dict[str, torch.Tensor] = {}
    for i, s in _progress(samples, desc):
        truth = GroundTruth(s.sample, size=s.size, frames=s.clip_frames)
        for name, make in makers.items():
            video, sec = make(s, i, s.garment)
            rows[name].append(_clip_row(video, truth))
            seconds[name].append(sec)
            if i == 0:
                examples[name] = video
        videos = {"constant_frame": constant_frame(truth), "codec_ceiling": codec_ceiling(codec, truth)}
        if shuffled:
            other = encode_garment(codec, shuffled_garment(samples, i, s.sample.garment.colour), s.size)
            videos["shuffled_garment"] = shuffled[1](s, i, other)[0]
        for name, video in videos.items():
            rows[name].append(_clip_row(video, truth))
            if i == 0:
                examples[name] = video
        if i == 0:
            examples = {"ground truth": truth.video, **examples}
    summary = stats.summarise(rows, seed=seed)
    for name, secs in seconds.items():
        if any(not math.isnan(x) for x in secs):
            summary[name]["backbone_seconds_per_clip"] = stats.bootstrap(secs, seed=seed).as_dict()
    return summary, rows, examples


def teacher_vs_untrained(samples, codec, teacher, untrained, plan: Plan, seed: int) -> tuple[dict, dict]:
    """Experiment 1: the SFT teacher against the same sampler on the initial weights (and the controls)."""

    def sampler(model):
        return lambda s, i, g: teacher_clip(model, s, codec, steps=plan.teacher_steps, cfg=plan.teacher_cfg,
                                            seed=seed + i, garment=g)

    summary, rows, examples = compare_clips(
        samples, codec, {"teacher_sft": sampler(teacher), "untrained": sampler(untrained)}, seed=seed,
        shuffled=("teacher_sft", sampler(teacher)), desc="teacher vs untrained")
    for name, model in (("teacher_sft", teacher), ("untrained", untrained)):
        summary[name]["heldout_flow_loss"] = {"mean": heldout_flow_loss(model, samples, seed), "low": math.nan,
                                              "high": math.nan, "n": len(samples)}
    summary["zero_velocity"] = {"heldout_flow_loss": {"mean": heldout_flow_loss(None, samples, seed),
                                                      "low": math.nan, "high": math.nan, "n": len(samples)}}
    return {"summary": summary, "rows": rows}, examples


def student_vs_teacher(samples, codec, teacher, students: dict, plan: Plan, seed: int) -> tuple[dict, dict]:
    """Experiment 2: each student streams one clip through the session; the teacher samples it whole."""

    def streamer(model):
        def make(s, i, g):
            chunks = model.config.latent.latent_frames(s.clip_frames) // CHUNK
            video, out = stream_clip(model, s, codec, chunks=chunks, seed=seed + i, garment=g)
            return video, sum(c.backbone_seconds for c in out)
        return make

    makers = {"teacher_sft": lambda s, i, g: teacher_clip(teacher, s, codec, steps=plan.teacher_steps,
                                                          cfg=plan.teacher_cfg, seed=seed + i, garment=g)}
    makers.update({name: streamer(model) for name, model in students.items()})
    first = next(iter(students))
    summary, rows, examples = compare_clips(samples, codec, makers, seed=seed,
                                            shuffled=(first, streamer(students[first])), desc="student vs teacher")
    teacher_s = summary["teacher_sft"]["backbone_seconds_per_clip"]["mean"]
    for name in students:
        summary[name]["speedup_vs_teacher"] = {"mean": teacher_s / summary[name]["backbone_seconds_per_clip"]["mean"],
                                               "low": math.nan, "high": math.nan, "n": len(samples)}
    return {"summary": summary, "rows": rows}, examples


def _switch_row(video: torch.Tensor, truth: GroundTruth, ranges: Sequence[range], switch_chunk: int,
                seconds: float) -> dict[str, float]:
    """The switch metrics of one video (see :data:`SWITCH_METRICS`)."""
    sample, new = truth.sample, truth.switch_to
    first = ranges[switch_chunk]
    before = ranges[switch_chunk - 1]
    part = slice(first.start, first.stop)
    prev = slice(before.start, before.stop)
    after = slice(first.start, None)
    whole = score_video(video, truth)
    ident_before = identity_scores(video[prev], truth.labels[prev], sample)["identity_error"]
    ident_after = identity_scores(video[part], truth.labels[part], sample)["identity_error"]
    return {
        "colour_first_chunk": garment_colour_accuracy(video[part], truth.video[part], truth.labels[part], new.colour),
        "colour_after": whole["garment_colour"],
        "leakage_first_chunk": leakage(video[part], truth.labels[part], sample.garment.colour),
        "leakage_after": whole["leakage"],
        "colour_before": whole["garment_colour_before"],
        "identity_error_before": ident_before,
        "identity_error_after": ident_after,
        "identity_change": ident_after - ident_before,
        "motion_agreement": whole["motion_agreement"],
        "switch_cut": whole["switch_cut"],
        "not_garment_after": whole["not_garment"],
        "switch_seconds": seconds,
    }


def _chunk_colours(video: torch.Tensor, truth: GroundTruth, ranges: Sequence[range], switch_chunk: int) -> list[float]:
    """Per chunk: colour accuracy against the garment the ground truth wears there."""
    out = []
    for k, r in enumerate(ranges):
        sl = slice(r.start, r.stop)
        colour = (truth.switch_to if k >= switch_chunk else truth.sample.garment).colour
        out.append(garment_colour_accuracy(video[sl], truth.video[sl], truth.labels[sl], colour))
    return out


def _head(student, s: EvalSample, seed: int, chunks: int, codec) -> tuple[Session, torch.Tensor]:
    """``s``'s stream for its first ``chunks`` chunks, run and decoded: (the session, to continue; its video)."""
    session = Session(start(student, s, seed=seed), chunks=chunks, codec=codec)
    return session, to_video(torch.cat([c.pixels for c in session.run()], dim=2))


def _switched(head: Session, head_video: torch.Tensor, event: GarmentSwitch, chunks: int,
              codec) -> tuple[torch.Tensor, float, bool]:
    """``head``'s stream continued for ``chunks`` chunks with ``event`` before the first: (the head's video and the
    tail's, the switch's seconds, whether it started a new clip)."""
    out = Session(head.state, chunks=chunks, codec=codec, timeline=[TimedSwitch(0, event)],
                  continue_decode=head.decoder).run()
    applied = out[0].switches[0]
    return torch.cat([head_video, to_video(torch.cat([c.pixels for c in out], dim=2))]), applied.seconds, applied.new_clip


def switching(samples, codec, student, plan: Plan, seed: int,
              variants: Sequence[str] | None = None) -> tuple[dict, dict]:
    """Experiment 3. A stream of two clips' length; the switch to the sample's ``switch_garment`` (same kind, other
    colour) comes at the clip boundary. The stream up to the switch is generated and decoded once; every variant
    continues it (the same session continued: bit-identical to one session switching there). ``restart``: a new
    stream (the user's reference and the new garment) from the switch on, its video appended.
    ``shuffled_garment``: all three operations, but the new garment's image is another sample's (another colour).
    ``other_person``: all three operations, the whole stream prompted with this sample's full caption but another
    held-out person's skin and hair (:func:`other_person`, :func:`other_person_prompt`), scored against this sample's
    person: how much of the identity the prompt carries when it describes the person (:data:`PROMPTS` ``full``).
    ``variants``: default the plan's ``switch_variants`` and the :data:`CONTROLS`.
    Returns (results, examples for the strips of the first clips)."""
    variants = list(variants) if variants is not None else [*plan.switch_variants, *CONTROLS]
    rows: dict[str, list[dict]] = {v: [] for v in variants}
    series: dict[str, list[list[float]]] = {v: [] for v in variants}
    strips: list[dict[str, Any]] = []
    for i, s in _progress(samples, "switching"):
        clip_chunks = student.config.latent.latent_frames(s.clip_frames) // CHUNK
        chunks, switch_chunk = 2 * clip_chunks, clip_chunks
        # A switch that withdraws every video frame starts a new clip whose first latent frame is not shown; one
        # that keeps the window or the sink continues the video. Each variant is scored on its own frames against
        # the ground truth of that length (the motion goes on through the switch either way).
        layouts = {new_clip: chunk_frame_ranges(chunks * CHUNK, clip_starts=(switch_chunk * CHUNK,) if new_clip else ())
                   for new_clip in (True, False)}
        switch_frame = layouts[True][switch_chunk].start
        new = s.meta["switch_garment"]
        truths: dict[int, GroundTruth] = {}

        def truth_of(frames: int) -> GroundTruth:
            if frames not in truths:
                truths[frames] = GroundTruth(s.sample, size=s.size, frames=frames, switch_to=new,
                                             switch_frame=switch_frame)
            return truths[frames]

        truth = truth_of(layouts[True][-1].stop)
        head_session, head = _head(student, s, seed + i, switch_chunk, codec)
        videos: dict[str, tuple[torch.Tensor, float, list[range]]] = {}
        for variant in variants:
            if variant == "constant_frame":
                videos[variant] = (constant_frame(truth), math.nan, layouts[True])
            elif variant == "codec_ceiling":
                videos[variant] = (codec_ceiling(codec, truth), math.nan, layouts[True])
            elif variant == "restart":
                # a new video from the user's reference: its first chunk shows one frame more than the new clip of
                # a switch (the new video's first frame), so one more chunk is made and the video cut to length
                tail, _ = stream_clip(student, s, codec, chunks=chunks - switch_chunk + 1, seed=seed + i + 1000,
                                      garment=encode_garment(codec, new, s.size))
                videos[variant] = (torch.cat([head, tail])[: truth.frames], math.nan, layouts[True])
            else:
                garment = shuffled_garment(samples, i, new.colour) if variant == "shuffled_garment" else new
                flags = SWITCH_FLAGS["all" if variant in ("shuffled_garment", "other_person") else variant]
                event = GarmentSwitch(image=garment_image(garment), label=garment.describe(), **flags)
                from_session, from_video = head_session, head
                if variant == "other_person":  # its own stream up to the switch, prompted with another person
                    text = other_person_prompt(s, other_person(samples, i), student.config.text_len)
                    from_session, from_video = _head(student, replace(s, text=text), seed + i, switch_chunk, codec)
                video, seconds, new_clip = _switched(from_session, from_video, event, chunks - switch_chunk, codec)
                videos[variant] = (video, seconds, layouts[new_clip])
        for variant, (video, seconds, ranges) in videos.items():
            variant_truth = truth_of(video.shape[0])
            rows[variant].append(_switch_row(video, variant_truth, ranges, switch_chunk, seconds))
            series[variant].append(_chunk_colours(video, variant_truth, ranges, switch_chunk))
        if i < plan.strip_clips:
            strips.append({"key": s.key, "switch_frame": switch_frame, "ground truth": truth.video,
                           **{v: video for v, (video, _, _) in videos.items()}})
    results = {
        "summary": stats.summarise(rows, seed=seed),
        "effects": stats.effects(rows, EFFECTS, SWITCH_METRICS, seed=seed),
        "series": {v: [stats.bootstrap([run[k] for run in runs], seed=seed).as_dict() for k in range(len(runs[0]))]
                   for v, runs in series.items()},
        "rows": rows,
        "switch_chunk": clip_chunks,
        "clips": [s.key for s in samples],
    }
    return results, {"strips": strips}


def long_stream(samples, codec, student, plan: Plan, seed: int) -> tuple[dict, torch.Tensor | None]:
    """Experiment 4: ``plan.long_factor`` clips' length without a switch; per-chunk colour accuracy and identity
    error, and their drift (the last clip's chunks minus the first clip's)."""
    runs_colour, runs_ident = [], []
    example = None
    for i, s in _progress(samples, "long stream"):
        clip_chunks = student.config.latent.latent_frames(s.clip_frames) // CHUNK
        chunks = plan.long_factor * clip_chunks
        video, _ = stream_clip(student, s, codec, chunks=chunks, seed=seed + i)
        truth = GroundTruth(s.sample, size=s.size, frames=video.shape[0])
        colour, ident = [], []
        for r in chunk_frame_ranges(chunks * CHUNK):
            sl = slice(r.start, r.stop)
            colour.append(garment_colour_accuracy(video[sl], truth.video[sl], truth.labels[sl], s.sample.garment.colour))
            ident.append(identity_scores(video[sl], truth.labels[sl], s.sample)["identity_error"])
        runs_colour.append(colour)
        runs_ident.append(ident)
        example = video if example is None else example
    clip_chunks = len(runs_colour[0]) // plan.long_factor

    def drift(runs: list[list[float]]) -> dict[str, dict]:
        first = [_nanmean(r[:clip_chunks]) for r in runs]
        last = [_nanmean(r[-clip_chunks:]) for r in runs]
        return {"first_clip": stats.bootstrap(first, seed=seed).as_dict(),
                "last_clip": stats.bootstrap(last, seed=seed).as_dict(),
                "change": stats.paired_difference(last, first, seed=seed).as_dict()}

    results = {
        "drift": {"garment_colour": drift(runs_colour), "identity_error": drift(runs_ident)},
        "series": {"garment_colour": [stats.bootstrap([r[k] for r in runs_colour], seed=seed).as_dict()
                                      for k in range(len(runs_colour[0]))],
                   "identity_error": [stats.bootstrap([r[k] for r in runs_ident], seed=seed).as_dict()
                                      for k in range(len(runs_ident[0]))]},
        "clip_chunks": clip_chunks,
        "clips": [s.key for s in samples],
    }
    return results, example


def _nanmean(values) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return statistics.fmean(vals) if vals else math.nan


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


# -------------------------------------------------------------------------------------------------------------------
# All of them
# -------------------------------------------------------------------------------------------------------------------


def run_all(layout: Layout, plan: Plan, *, seed: int = 0) -> dict[str, Any]:
    """Every experiment, its plots under ``layout.plots``; returns the results (plots named in ``plots``)."""
    from chameleon_core.world.codec import load_codec

    from . import plots

    codec = load_codec(layout.codec)
    samples = load_eval_samples(layout, max(plan.eval_samples, plan.switch_samples, plan.long_samples))
    teacher, untrained = load_model(layout.teacher), load_model(layout.init)
    student, forcing = load_model(layout.student), load_model(layout.forcing_student)
    results: dict[str, Any] = {}
    logger.info("experiment 1: teacher after SFT vs untrained (%d held-out clips)", plan.eval_samples)
    results["teacher_vs_untrained"], ex1 = teacher_vs_untrained(samples[: plan.eval_samples], codec, teacher,
                                                                untrained, plan, seed)
    logger.info("experiment 2: 4-step student vs %d-step teacher (%d clips)", plan.teacher_steps, plan.eval_samples)
    results["student_vs_teacher"], ex2 = student_vs_teacher(
        samples[: plan.eval_samples], codec, teacher, {"student_dmd": student, "student_forcing": forcing}, plan,
        seed)
    logger.info("experiment 3: garment switching on %d clips: %s + controls", plan.switch_samples,
                ", ".join(plan.switch_variants))
    results["switching"], ex3 = switching(samples[: plan.switch_samples], codec, student, plan, seed)
    logger.info("experiment 3 with the person described in the prompt (%d clips): %s + controls",
                plan.switch_samples, ", ".join(plan.described_variants))
    described = load_eval_samples(layout, plan.switch_samples, prompt="full")
    results["switching_described"], _ = switching(described, codec, student, plan, seed,
                                                  variants=[*plan.described_variants, *CONTROLS])
    logger.info("experiment 4: a stream %dx the training clip (%d clips)", plan.long_factor, plan.long_samples)
    results["long_stream"], ex4 = long_stream(samples[: plan.long_samples], codec, student, plan, seed)
    results["plots"] = plots.write_all(layout.plots, ex1=ex1, ex2=ex2, ex3=ex3, ex4=ex4,
                                       switching=results["switching"], long=results["long_stream"])
    return results
