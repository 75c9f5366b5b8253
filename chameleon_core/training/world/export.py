"""Export a trained world run as the pack's demo files: ``python -m chameleon_core.training.world export --run DIR
[--seed S] --out demo``.

Writes, under the names :mod:`chameleon_core.tools.demo_models` and the ``demo`` templates use
(``<out>/models/<folder>/<file>`` and ``<out>/input/<image>``):

- the trained 4-step student (after GR-DMD) in bf16, kind ``student``;
- the world codec in bf16 (a Wan2.2-architecture VAE of width 16/32: the any-size VAE loader reads it);
- prompt features of the demo's caption, from the world's caption encoder (no umT5 needed);
- the demo person (a held-out identity, in a garment of its own) and three garments of the same kind, each another
  colour: what a template streams, switching from garment 1 to 2 to 3.

The demo person and garments are held-out combinations the model never saw in training.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

logger = logging.getLogger(__name__)

DEMO_SAMPLE = 5
"""Index of the held-out (``test``) world sample the demo shows (a seeded draw; any index works)."""
DEMO_MOTION = "sway"
"""The demo's motion (and caption): a person swaying in place stays in frame for any stream length."""


def demo_garments(sample):
    """Three garments of the sample's kind, three different colours (the first the sample's own)."""
    from chameleon_core.world.catalog import GARMENT_COLOUR, PATTERN

    colours = [sample.garment.colour] + [c for c in GARMENT_COLOUR if c != sample.garment.colour
                                         and c != sample.reference_garment.colour][:2]
    patterns = [sample.garment.pattern] + [p for p in PATTERN if p != sample.garment.pattern][:2]
    return [replace(sample.garment, colour=c, pattern=p) for c, p in zip(colours, patterns)]


def demo_sample():
    from chameleon_core.world import sample_world

    return replace(sample_world(DEMO_SAMPLE, "test"), motion=DEMO_MOTION, phase=0)


def export_demo(run: str | Path, out: str | Path, *, seed: int = 0) -> dict[str, Path]:
    """Write the demo files from the run folder ``run`` (training seed ``seed``) into ``out``; returns the paths."""
    from chameleon_core.checkpoints import load_transformer, save_transformer, save_vae
    from chameleon_core.text import save_prompt_embeddings
    from chameleon_core.tools.demo_models import FILES, IMAGES
    from chameleon_core.world import caption, encode_caption, render_garment_on_white, render_reference
    from chameleon_core.world.codec import load_codec

    from .pipeline import Layout

    layout = Layout(Path(run), seed)
    for what, path in (("student", layout.student), ("codec", layout.codec)):
        if not path.is_file():
            raise FileNotFoundError(f"the run {run} has no {what} at {path}; run the pipeline first "
                                    f"(python -m chameleon_core.training.world run --out {run} --seed {seed})")
    out = Path(out)
    paths = {k: out / "models" / v for k, v in FILES.items()}
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    student = load_transformer(layout.student, dtype=torch.float32, device="cpu")
    save_transformer(paths["student"], student, kind="student", dtype=torch.bfloat16,
                     metadata={"fashionchameleon.demo": "trained on the synthetic fashion world",
                               "fashionchameleon.world_run": str(run), "fashionchameleon.seed": str(seed)})
    codec = load_codec(layout.codec).to(dtype=torch.bfloat16)
    save_vae(paths["vae"], codec, metadata={"fashionchameleon.demo": "the synthetic fashion world's codec"})
    sample = demo_sample()
    prompt = caption(sample)["en_long"][0]
    save_prompt_embeddings(paths["prompt"], encode_caption(prompt, max_len=student.config.text_len), prompt)
    inputs = out / "input"
    inputs.mkdir(parents=True, exist_ok=True)
    person, *garment_names = IMAGES
    Image.fromarray(render_reference(sample).frames[0].numpy()).save(inputs / person)
    paths[person] = inputs / person
    for name, garment in zip(garment_names, demo_garments(sample)):
        Image.fromarray(render_garment_on_white(garment).numpy(), "RGBA").save(inputs / name)
        paths[name] = inputs / name
    for k, p in paths.items():
        logger.info("%s: %s (%.1f MB)", k, p, p.stat().st_size / 2**20)
    return paths


def demo_stream(demo: str | Path, *, frames: int | None = None, switches: tuple[int, ...] | None = None,
                seed: int = 42, garments: tuple[int, ...] = (1, 2, 3)) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Stream the demo files in ``demo`` as the ``demo_switch_chain`` template does (the same session loop as the
    nodes and the command line): the person in garment image ``garments[0]``, switching to ``garments[1]``, then
    ``garments[2]`` ... at the demo's switch frames (numbers of the demo's garment images, 1-3). Returns the video
    ``[T, H, W, 3]`` in [0, 1] and the frames at which the switches take effect."""
    from chameleon_core.checkpoints import load_transformer, load_vae
    from chameleon_core.frames import latent_frames_covering, whole_chunk_segments
    from chameleon_core.images import load_image
    from chameleon_core.session import GarmentSwitch, Session, TimedSwitch, encode_condition
    from chameleon_core.streaming import start_stream
    from chameleon_core.text import load_prompt_embeddings
    from chameleon_core.tools import demo_models as dm

    demo = Path(demo)
    switches = dm.DEMO_SWITCH_FRAMES if switches is None else switches
    frames = frames or (dm.DEMO_CHAIN_FRAMES if switches else dm.DEMO_FRAMES)
    if len(garments) != len(switches) + 1:
        raise ValueError(f"{len(switches)} switches need {len(switches) + 1} garments, got {garments}")
    model = load_transformer(demo / "models" / dm.FILES["student"], dtype=torch.float32, device="cpu")
    vae = load_vae(demo / "models" / dm.FILES["vae"], dtype=torch.float32)
    family = model.config.latent
    size = (dm.DEMO_WIDTH, dm.DEMO_HEIGHT)
    person = load_image(demo / "input" / dm.IMAGES[0])
    images = [load_image(demo / "input" / dm.IMAGES[g]) for g in garments]
    settings = dm.DEMO_SETTINGS
    state = start_stream(model, context=load_prompt_embeddings(demo / "models" / dm.FILES["prompt"],
                                                               text_dim=model.config.text_dim),
                         reference=encode_condition(vae, family, person, garment=False, size=size),
                         garment=encode_condition(vae, family, images[0], garment=True, size=size), seed=seed,
                         settings=settings)
    # each switch starts a new clip (the default switch), so the segments after it show one latent frame less
    segments = whole_chunk_segments(frames, switches, settings.chunk_frames, switches_open_clips=True)
    seg_chunks = [latent_frames_covering(n, from_start=k == 0, opens_clip=k > 0) // settings.chunk_frames
                  for k, n in enumerate(segments)]
    boundaries = [sum(seg_chunks[:k]) for k in range(1, len(segments))]
    timeline = [TimedSwitch(c, GarmentSwitch(image, label=dm.IMAGES[g]))
                for c, image, g in zip(boundaries, images[1:], garments[1:])]
    out_chunks = Session(state, chunks=sum(seg_chunks), codec=vae, timeline=timeline).run()
    video = ((torch.cat([c.pixels for c in out_chunks], dim=2)[0].permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1)
    effective = tuple(a.video_frame for c in out_chunks for a in c.switches)
    return video, effective


def demo_strip(demo: str | Path, out: str | Path, *, frames: int | None = None,
               switches: tuple[int, ...] | None = None, seed: int = 42) -> Path:
    """Stream the demo files in ``demo`` as the ``demo_switch_chain`` template does (:func:`demo_stream`) and write a
    strip of its frames (every switch's first frame framed in red) to ``out``; returns the path."""
    from .plots import frame_strip

    video, effective = demo_stream(demo, frames=frames, switches=switches, seed=seed)
    picks = sorted({*range(0, video.shape[0], 6), video.shape[0] - 1, *effective})
    return frame_strip(Path(out), {"demo stream": video}, picks, scale=2, marker=effective)


def demo_scores(video: torch.Tensor, switch_frames: tuple[int, ...], garments: tuple[int, ...] = (1, 2, 3),
                *, against: tuple[int, ...] | None = None) -> list[float]:
    """Garment colour accuracy of each segment of a demo stream (:func:`demo_stream`): segment ``k`` (from the k-th
    switch frame to the next) scored against the colour of demo garment ``against[k]`` (by default the garment the
    stream was given there, ``garments[k]``), on masks from the renderer's labels of the demo person in that
    garment. A control passes another ``against``: a stream that never switched, scored against the garments it
    should have switched to, must score low."""
    from chameleon_core.eval.world import garment_colour_accuracy
    from chameleon_core.world import render

    against = garments if against is None else against
    if len(against) != len(switch_frames) + 1:
        raise ValueError(f"{len(switch_frames)} switch frames make {len(switch_frames) + 1} segments; "
                         f"got {len(against)} garments to score them against")
    sample = demo_sample()
    options = demo_garments(sample)
    frames, size = video.shape[0], video.shape[1]
    bounds = [0, *switch_frames, frames]
    scores = []
    for k, g in enumerate(against):
        garment = options[g - 1]
        truth = render(sample, size=size, frames=frames, garment=garment)
        window = slice(bounds[k], bounds[k + 1])
        scores.append(garment_colour_accuracy(video[window], truth.float_frames()[window], truth.labels[window],
                                              garment.colour))
    return scores
