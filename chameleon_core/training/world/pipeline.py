"""The whole FashionChameleon pipeline in miniature, on the synthetic fashion world: one call, one results folder.

``python -m chameleon_core.training.world run --out DIR [--quick] [--seed S]`` runs :func:`run_pipeline`, top to bottom:

1. **world** -- the train split and the held-out split (:func:`chameleon_core.world.write_dataset`);
2. **codec** -- the world's small Wan2.2-architecture VAE (:func:`chameleon_core.world.train_codec`);
3. **prepare** -- the latent caches of both splits, with the training package's own row encoder
   (:func:`chameleon_core.training.prepare.encode_row` / :func:`~chameleon_core.training.prepare.write_manifest`:
   the codec encodes video, reference and garment; the world's caption encoder gives the three prompt variants);
4. **sft** -- the in-context teacher, from seeded random weights of the tiny DiT chosen for this machine
   (:func:`chameleon_core.training.stage_sft.run_sft`);
5. **forcing** -- in-context teacher forcing, from the SFT teacher (:func:`~chameleon_core.training.stage_forcing.run_forcing`);
6. **dmd** -- GR-DMD from the forcing student, real score and critic from the SFT teacher
   (:class:`~chameleon_core.training.stage_dmd.DMDTrainer`), with the world's stand-in reward
   (:class:`chameleon_core.training.world.reward.PaletteReward`) in place of the aesthetic predictor;
7. **experiments** -- the 4-step student streamed through the pack's own stream API and scored with the world's
   exact metrics (:mod:`chameleon_core.training.world.experiments`), plots (:mod:`chameleon_core.training.world.plots`),
   ``results.json`` and ``report.md``.

Every stage writes into its own folder under ``DIR`` and is skipped when its output exists, so an interrupted run
resumes where it stopped (the training stages also resume from their own checkpoints). Sizes (:class:`Plan`) are
the only difference between ``--quick`` (CI: about two minutes on two cores) and the full run (about half an hour).
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from chameleon_core.config import WanConfig

logger = logging.getLogger(__name__)


# -------------------------------------------------------------------------------------------------------------------
# Sizes
# -------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelPlan:
    """The tiny DiT trained here: Wan2.2 latents (48 channels), 128-wide heads as every Wan (the loader relies on it)."""

    dim: int = 256
    ffn_dim: int = 1024
    num_layers: int = 4
    text_len: int = 48
    """Prompt tokens the DiT pads to (the world's full captions are about 40 words)."""

    def config(self, text_dim: int) -> WanConfig:
        return WanConfig(dim=self.dim, ffn_dim=self.ffn_dim, num_heads=self.dim // 128, num_layers=self.num_layers,
                         in_dim=48, out_dim=48, text_dim=text_dim, text_len=self.text_len, name="world")


@dataclass(frozen=True)
class Plan:
    """Everything that differs between ``--quick`` and the full run."""

    quick: bool
    train_samples: int
    """Clips of the train split (every identity x garment x motion combination the model learns from)."""
    test_samples: int
    """Clips of the held-out split (combinations never seen in training)."""
    codec_steps: int
    model: ModelPlan
    batch: int
    sft_steps: int
    sft_lr: float
    forcing_steps: int
    forcing_lr: float
    dmd_iterations: int
    """GR-DMD iterations; the generator updates on every ``dmd_critic_per_generator``-th."""
    dmd_batch: int
    dmd_lr: float
    dmd_critic_lr: float
    dmd_critic_per_generator: int
    eval_samples: int
    """Held-out samples of experiment 1 (teacher vs untrained)."""
    stream_samples: int
    """Held-out samples of experiments 2 and 3 (student vs teacher, switching)."""
    long_samples: int
    """Held-out samples of experiment 4 (the long stream)."""
    teacher_steps: int = 50
    """The teacher's sampling steps (UniPC, the paper's 50)."""
    teacher_cfg: float = 3.0
    long_factor: int = 10
    """The long stream is this many times the training clip."""
    switch_variants: tuple[str, ...] = ("all", "no_refresh", "no_withdraw", "no_disentangle", "keep_sink", "restart")


FULL = Plan(
    quick=False, train_samples=320, test_samples=24, codec_steps=0, model=ModelPlan(),
    batch=8, sft_steps=700, sft_lr=5e-4, forcing_steps=150, forcing_lr=2e-4,
    dmd_iterations=50, dmd_batch=4, dmd_lr=5e-5, dmd_critic_lr=1e-4, dmd_critic_per_generator=5,
    eval_samples=8, stream_samples=6, long_samples=3,
)
QUICK = Plan(
    quick=True, train_samples=32, test_samples=4, codec_steps=0, model=ModelPlan(dim=128, ffn_dim=256, num_layers=2),
    batch=8, sft_steps=80, sft_lr=1e-3, forcing_steps=10, forcing_lr=1e-4,
    dmd_iterations=5, dmd_batch=2, dmd_lr=2e-5, dmd_critic_lr=1e-4, dmd_critic_per_generator=5,
    eval_samples=4, stream_samples=1, long_samples=1, teacher_steps=8, long_factor=2, switch_variants=("all", "no_withdraw", "restart"),
)


def plan_for(quick: bool) -> Plan:
    return QUICK if quick else FULL


# -------------------------------------------------------------------------------------------------------------------
# The results folder
# -------------------------------------------------------------------------------------------------------------------


@dataclass
class Layout:
    """Where each stage writes, under the run's folder."""

    root: Path

    @property
    def world(self) -> Path:
        return self.root / "world"

    @property
    def codec(self) -> Path:
        return self.root / "codec" / "world_vae.safetensors"

    def cache(self, split: str) -> Path:
        return self.root / "cache" / split

    @property
    def init(self) -> Path:
        return self.root / "runs" / "init" / "random_teacher.safetensors"

    def run(self, stage: str) -> Path:
        return self.root / "runs" / stage

    @property
    def teacher(self) -> Path:
        return self.run("sft") / "export" / "teacher.safetensors"

    @property
    def forcing_student(self) -> Path:
        return self.run("forcing") / "export" / "student.safetensors"

    @property
    def student(self) -> Path:
        return self.run("dmd") / "export" / "student.safetensors"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def results(self) -> Path:
        return self.root / "results.json"


@dataclass
class Timings:
    """Wall seconds per stage, summed over the invocations of a resumed run (kept in ``<run>/timings.json``)."""

    path: Path
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Timings:
        return cls(path, json.loads(path.read_text()) if path.is_file() else {})

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        logger.info("== %s", name)
        t0 = time.perf_counter()
        yield
        elapsed = time.perf_counter() - t0
        self.seconds[name] = round(self.seconds.get(name, 0.0) + elapsed, 1)
        self.path.write_text(json.dumps(self.seconds, indent=1))
        logger.info("== %s done in %.1f s (%.1f s in all)", name, elapsed, self.seconds[name])

    @property
    def total(self) -> float:
        return round(sum(self.seconds.values()), 1)


# -------------------------------------------------------------------------------------------------------------------
# Stages
# -------------------------------------------------------------------------------------------------------------------


def prepare_cache(csv: Path, out: Path, *, codec: Path, text: Callable[[list[str]], list[torch.Tensor]],
                  frames: int, size: int) -> int:
    """The latent cache of one split through the training package's own row encoder and manifest writer.

    (``prepare``'s command line takes a umT5 folder; the world has its own caption encoder, so the rows are encoded
    here with :func:`~chameleon_core.training.prepare.encode_row` and the folder finished with
    :func:`~chameleon_core.training.prepare.write_manifest`, which names the codec for GR-DMD's reward decoding.)
    """
    from safetensors.torch import save_file

    from chameleon_core.checkpoints import load_vae
    from chameleon_core.training.data import read_train_csv
    from chameleon_core.training.latent_cache import ITEMS
    from chameleon_core.training.prepare import encode_row, write_manifest

    (out / ITEMS).mkdir(parents=True, exist_ok=True)
    vae = load_vae(codec, device="cpu", dtype=torch.float32)
    rows = read_train_csv(csv)
    for row in progress(rows, f"prepare {csv.stem}"):
        target = out / ITEMS / f"{row.key}.safetensors"
        if target.is_file():
            continue
        tensors, meta = encode_row(row, vae, text, frames, size, size, torch.float32)
        save_file(tensors, str(target), metadata=meta)
    return write_manifest(out, {"vae": str(codec), "text_encoder": "chameleon_core.world caption encoder",
                                "frames": frames, "width": size, "height": size, "csv": str(csv)})


def progress(items, desc: str):
    """A progress bar on a terminal (tqdm), the plain iterable otherwise."""
    import sys

    if sys.stderr.isatty():
        try:
            from tqdm import tqdm

            return tqdm(items, desc=desc, dynamic_ncols=True)
        except ImportError:
            pass
    return items


def write_initial_weights(path: Path, config: WanConfig, seed: int) -> Path:
    """Seeded random weights of the tiny DiT, written as a teacher checkpoint (the SFT stage's ``model.init``)."""
    from chameleon_core.checkpoints import save_transformer
    from chameleon_core.testing import random_transformer

    path.parent.mkdir(parents=True, exist_ok=True)
    return save_transformer(path, random_transformer(config, seed=seed), kind="teacher",
                            metadata={"fashionchameleon.note": "untrained: seeded random init of the world DiT"})


def stage_config(stage: str, plan: Plan, layout: Layout, seed: int) -> dict[str, Any]:
    """The training config (the JSON a preset file holds) of one stage of the miniature recipe."""
    common = {
        "model": {"arch": "tiny", "param_dtype": "fp32", "fsdp": False, "activation_checkpointing": False,
                  "text_len": plan.model.text_len},
        "flow": {"shift": 5.0, "quantize_timestep": True},
        "run": {"out": str(layout.run(stage)), "save_every": 10_000, "seed": seed, "export_dtype": "fp32",
                "device": "cpu", "log_every": 1},
    }
    if stage == "sft":
        return {**common, "stage": "sft",
                "model": {**common["model"], "init": str(layout.init)},
                "data": {"cache": str(layout.cache("train")), "batch_size": plan.batch, "full_caption_prob": 0.3,
                         "empty_text_prob": 0.1},
                "optim": {"lr": plan.sft_lr, "betas": [0.9, 0.999], "weight_decay": 0.01, "clip": 1.0,
                          "warmup_steps": max(1, plan.sft_steps // 20)},
                "run": {**common["run"], "steps": plan.sft_steps}}
    if stage == "forcing":
        return {**common, "stage": "forcing",
                "model": {**common["model"], "init": str(layout.teacher)},
                "data": {"cache": str(layout.cache("train")), "batch_size": plan.batch, "full_caption_prob": 0.3,
                         "empty_text_prob": 0.1},
                "optim": {"lr": plan.forcing_lr, "betas": [0.0, 0.999], "weight_decay": 0.01, "clip": 10.0,
                          "warmup_steps": 0},
                "forcing": {"chunk_frames": 3, "attention": "sdpa"},
                "run": {**common["run"], "steps": plan.forcing_steps}}
    if stage == "dmd":
        return {**common, "stage": "dmd",
                "model": {**common["model"], "init": str(layout.forcing_student)},
                "data": {"cache": str(layout.cache("train")), "batch_size": plan.dmd_batch,
                         "full_caption_prob": 0.3, "empty_text_prob": 0.0},
                "optim": {"lr": plan.dmd_lr, "betas": [0.0, 0.999], "weight_decay": 0.01, "clip": 10.0,
                          "warmup_steps": 0},
                "dmd": {"teacher": str(layout.teacher), "critic_lr": plan.dmd_critic_lr,
                        "critic_per_generator": plan.dmd_critic_per_generator, "ema_decay": 0.99,
                        "ema_start": max(1, plan.dmd_iterations // 4), "tau": 0.2, "guidance": 3.0,
                        "t_min": 20.0, "t_max": 980.0, "denoise_steps": 4, "chunk_frames": 3,
                        "reward": "brightness", "extra": {"vae": str(layout.codec)}},
                "run": {**common["run"], "steps": plan.dmd_iterations}}
    raise ValueError(f"unknown stage {stage!r}; the recipe is sft, forcing, dmd")


def train_stage(stage: str, plan: Plan, layout: Layout, seed: int) -> Path:
    """Run one training stage through the training package's public stage functions; returns its export."""
    from chameleon_core.training.config import config_from_dict

    export = {"sft": layout.teacher, "forcing": layout.forcing_student, "dmd": layout.student}[stage]
    if export.is_file():
        logger.info("%s: %s exists, skipped", stage, export)
        return export
    cfg = config_from_dict(stage_config(stage, plan, layout, seed))
    if stage == "sft":
        from chameleon_core.training.stage_sft import run_sft

        run_sft(cfg)
    elif stage == "forcing":
        from chameleon_core.training.stage_forcing import run_forcing

        run_forcing(cfg)
    else:
        run_world_dmd(cfg)
    if not export.is_file():
        raise RuntimeError(f"the {stage} stage finished without writing {export}; see {layout.run(stage)}")
    return export


def run_world_dmd(cfg) -> None:
    """GR-DMD with the world's reward: the stage's own trainer, its reward replaced by
    :class:`~chameleon_core.training.world.reward.PaletteReward` (same interface as the aesthetic score: frames in [-1, 1]
    -> one score per frame, higher is better). ``dmd.reward`` stays a stand-in name so the trainer builds the reward
    decoder (the codec, from ``dmd.extra.vae``)."""
    from chameleon_core.training.runtime import Run
    from chameleon_core.training.stage_dmd import DMDTrainer

    from .reward import PaletteReward

    run = Run.start(cfg)
    try:
        trainer = DMDTrainer(run)
        trainer.reward = PaletteReward()
        trainer.train()
    finally:
        run.close()


# -------------------------------------------------------------------------------------------------------------------
# The whole run
# -------------------------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import os

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform()}


def use_codec(source: Path, layout: Layout, *, size: int, frames: int, seed: int) -> dict[str, Any]:
    """Copy a codec trained elsewhere into the run (instead of training one) and measure its held-out PSNR as
    :func:`~chameleon_core.world.train_codec` reports it."""
    import shutil

    from chameleon_core.world.codec import codec_psnr, load_codec, world_clips

    if not source.is_file():
        raise FileNotFoundError(f"--codec {source}: no such file; pass a codec written by train_codec (save_vae)")
    layout.codec.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, layout.codec)
    vae = load_codec(layout.codec)
    test = world_clips(8, "test", size=size, frames=frames, seed=seed * 100_003 + 50_000)
    return {"path": str(layout.codec), "source": str(source), "psnr_test": codec_psnr(vae, test),
            "note": "trained outside this run (--codec)"}


def run_pipeline(out: str | Path, *, quick: bool = False, seed: int = 0, plan: Plan | None = None,
                 codec: str | Path | None = None) -> dict[str, Any]:
    """Run everything (see the module docstring) into ``out``; returns the results (also ``out/results.json``).
    ``codec``: use this codec file instead of training one."""
    from chameleon_core import world

    from . import experiments

    plan = plan or plan_for(quick)
    layout = Layout(Path(out))
    layout.root.mkdir(parents=True, exist_ok=True)
    timings = Timings.load(layout.root / "timings.json")
    if "experiments" in timings.seconds:  # a finished run scored again: its experiments time is this run's alone
        del timings.seconds["experiments"]
    size, frames = world.SIZE, world.FRAMES

    with timings.stage("world"):
        csvs = {}
        for split, count in (("train", plan.train_samples), ("test", plan.test_samples)):
            csv = layout.world / f"{split}.csv"
            csvs[split] = csv if csv.is_file() else world.write_dataset(layout.world, split=split, count=count,
                                                                        size=size, frames=frames, seed=seed)
    with timings.stage("codec"):
        report_path = layout.codec.with_suffix(".json")
        if layout.codec.is_file() and report_path.is_file():
            codec_report = json.loads(report_path.read_text())
        elif codec is not None:
            codec_report = use_codec(Path(codec), layout, size=size, frames=frames, seed=seed)
            report_path.write_text(json.dumps(codec_report, indent=1, default=str))
        else:
            layout.codec.parent.mkdir(parents=True, exist_ok=True)
            codec_report = world.train_codec(layout.codec, quick=plan.quick, seed=seed,
                                             **({"steps": plan.codec_steps} if plan.codec_steps else {}))
            report_path.write_text(json.dumps(codec_report, indent=1, default=str))
    with timings.stage("prepare"):
        def text(prompts: list[str]) -> list[torch.Tensor]:
            return [world.encode_caption(p, max_len=plan.model.text_len) for p in prompts]

        for split, csv in csvs.items():
            manifest = layout.cache(split) / "manifest.json"
            if not manifest.is_file():
                prepare_cache(csv, layout.cache(split), codec=layout.codec, text=text, frames=frames, size=size)
    config = plan.model.config(world.TEXT_DIM)
    if not layout.init.is_file():
        write_initial_weights(layout.init, config, seed)
    for stage in ("sft", "forcing", "dmd"):
        with timings.stage(stage):
            train_stage(stage, plan, layout, seed)
    with timings.stage("experiments"):
        results = experiments.run_all(layout, plan, seed=seed)

    results.update({
        "command": f"python -m chameleon_core.training.world run --out {out}" + (" --quick" if quick else "")
                   + (f" --seed {seed}" if seed else "") + (f" --codec {codec}" if codec else ""),
        "plan": asdict(plan),
        "model_config": asdict(config),
        "codec": codec_report,
        "timings_s": timings.seconds,
        "wall_s": timings.total,
        "machine": machine(),
        "files": {"student": str(layout.student), "teacher": str(layout.teacher), "codec": str(layout.codec)},
    })
    layout.results.write_text(json.dumps(results, indent=1, default=str))
    (layout.root / "report.md").write_text(report_markdown(results))
    logger.info("results: %s (%.0f s)", layout.results, results["wall_s"])
    return results


# -------------------------------------------------------------------------------------------------------------------
# The report
# -------------------------------------------------------------------------------------------------------------------


def _cell(row: dict, key: str) -> str:
    value = row.get(key)
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "n/a"
    std = row.get(f"{key}_std")
    text = f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return f"{text} ± {std:.3f}" if isinstance(std, (int, float)) and std > 0 else text


def markdown_table(rows: dict[str, dict], keys: list[str], first: str = "") -> str:
    """``rows[name][key]`` (with ``key_std``) as a markdown table, one row per name, mean ± std per cell."""
    lines = ["| " + " | ".join([first, *keys]) + " |", "|" + "---|" * (len(keys) + 1)]
    lines += ["| " + " | ".join([name, *(_cell(row, k) for k in keys)]) + " |" for name, row in rows.items()]
    return "\n".join(lines)


def report_markdown(results: dict[str, Any]) -> str:
    """The results as markdown tables (``report.md``; the write-up in docs/experiments/ quotes them)."""
    clip = ["garment_projection", "garment_accuracy", "garment_colour", "garment_pattern", "identity_error", "motion_agreement",
            "temporal_jitter", "pixel_mse", "reward"]
    parts = [
        "# World experiments: results", "",
        (f"Command: `{results.get('command', '')}`; wall time {results.get('wall_s', 0):.0f} s; "
         f"machine: {results.get('machine', {})}"), "",
        f"Stage seconds: {results.get('timings_s', {})}", "",
        f"Codec: held-out PSNR {results.get('codec', {}).get('psnr_test', float('nan')):.2f} dB", "",
        "## 1. Teacher after SFT vs the untrained model (held-out combinations)", "",
        markdown_table(results["teacher_vs_untrained"], ["heldout_flow_loss", *clip], "model"), "",
        "## 2. The 4-step student vs the 50-step teacher", "",
        markdown_table(results["student_vs_teacher"], [*clip, "backbone_seconds_per_clip", "speedup_vs_teacher"],
                       "model"), "",
        "## 3. Garment switching", "",
        markdown_table(results["switching"], ["garment_projection_before", "garment_projection_first_chunk",
                                              "garment_projection_after", "latency_chunks"], "variant"), "",
        markdown_table(results["switching"], ["garment_colour_after", "garment_accuracy_after", "target_share_after",
                                              "leakage", "old_share_after", "latency_chunks_pixels"], "variant"), "",
        markdown_table(results["switching"], ["identity_error_before", "identity_error_after", "switch_cut",
                                              "motion_agreement", "switch_seconds"], "variant"), "",
        "## 4. Long stream", "",
        markdown_table(results["long_stream"], ["first_clip", "last_clip", "change"], "metric"), "",
        "Plots: " + ", ".join(f"[{p}](plots/{p})" for p in results.get("plots", [])), "",
    ]
    return "\n".join(parts)
