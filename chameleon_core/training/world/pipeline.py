"""The whole FashionChameleon pipeline in miniature, on the synthetic fashion world: one call, one results folder.

``python -m chameleon_core.training.world run --out DIR [--quick] [--seed S]`` runs :func:`run_pipeline`, top to
bottom:

1. **world** -- the train split and the held-out split (:func:`chameleon_core.world.write_dataset`; always data
   seed 0, so runs with other training seeds share it);
2. **codec** -- the world's Wan2.2-architecture VAE: the one the pack ships (``demo/models/vae/``), another file
   (``--codec``) or one trained in the run (``--train-codec``), and in every case its **gate**
   (:func:`chameleon_core.world.codec.check_codec_gate`): its reconstruction of held-out ground truth must show the
   garment's colour and keep the person, or the run stops before anything trains;
3. **prepare** -- the latent caches of both splits, with the training package's own row encoder
   (:func:`chameleon_core.training.prepare.encode_rows` / :func:`~chameleon_core.training.prepare.write_manifest`:
   the codec encodes video, reference and garment; the world's caption encoder gives the three prompt variants);
4. **sft** -- the in-context teacher, from seeded random weights of the tiny DiT chosen for this machine
   (:func:`chameleon_core.training.stage_sft.run_sft`);
5. **forcing** -- in-context teacher forcing, from the SFT teacher (:func:`~chameleon_core.training.stage_forcing.run_forcing`);
6. **dmd** -- GR-DMD from the forcing student, real score and critic from the SFT teacher
   (:class:`~chameleon_core.training.stage_dmd.DMDTrainer`), with the world's stand-in reward
   (:class:`chameleon_core.training.world.reward.PaletteReward`) in place of the aesthetic predictor;
7. **experiments** -- the 4-step student streamed through the pack's own stream API and scored with the world's
   exact metrics and their controls (:mod:`chameleon_core.training.world.experiments`), plots
   (:mod:`chameleon_core.training.world.plots`), ``results_seed<S>.json`` and ``report.md`` (every seed run so far).

Every stage writes into its own folder under ``DIR`` and is skipped when its output exists, so an interrupted run
resumes where it stopped (the training stages also resume from their own checkpoints), and ``--seed 1`` after
``--seed 0`` trains and scores a second seed on the same world, codec and caches. Sizes (:class:`Plan`) are the only
difference between ``--quick`` (the CI test) and the full run.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from chameleon_core.config import WanConfig
from chameleon_core.precision import native_bf16

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
    patch: int = 2
    """Latent cells per token along height and width: Wan's 2 (four tokens per 64x64 frame) or 1 (sixteen)."""

    def config(self, text_dim: int) -> WanConfig:
        return WanConfig(dim=self.dim, ffn_dim=self.ffn_dim, num_heads=self.dim // 128, num_layers=self.num_layers,
                         in_dim=48, out_dim=48, text_dim=text_dim, text_len=self.text_len,
                         patch_size=(1, self.patch, self.patch), name="world")


@dataclass(frozen=True)
class Plan:
    """Everything that differs between ``--quick`` and the full run."""

    quick: bool
    train_samples: int
    """Clips of the train split (every identity x garment x motion combination the model learns from). The full
    run's 3,200 replaced 800, on which the student drew held-out people's hair and skin worse than training ones'
    (identity error 0.37 against 0.20 on training clips, 0.32 even in the first frame, which re-draws the
    reference's pose): it had learnt combinations, not to copy the reference (docs/experiments/world.md, item 7)."""
    test_samples: int
    """Clips of the held-out split (combinations never seen in training)."""
    model: ModelPlan
    batch: int
    sft_steps: int
    """The teacher's SFT steps. 15,000 against 7,000 raised the teacher's garment colour 0.82 -> 0.90 and the
    switch's 0.78 -> 0.84 (docs/experiments/world.md, item 5); larger batches cost in proportion, so the time goes
    to steps: the full run's 24,000 take about 22 minutes in bf16 (:attr:`autocast`), compiled (:attr:`compile`), on
    two threads."""
    sft_lr: float
    forcing_steps: int
    """Teacher-forcing steps. With seed 0's teacher, 6,000 against 4,000 took the forcing student's identity error
    0.287 -> 0.234 (the teacher's 0.235) and its garment colour 0.903 -> 0.918 (docs/experiments/world.md, item 9);
    the minutes come mostly from compiling SFT (:attr:`compile`)."""
    forcing_lr: float
    dmd_iterations: int
    """GR-DMD iterations; the generator updates on every ``dmd_critic_per_generator``-th."""
    dmd_batch: int
    dmd_lr: float
    """GR-DMD's generator learning rate. After the 6,000-step teacher forcing, 5e-5 cost the switch identity (its
    change across the switch 0.067 -> 0.108, colour 0.911 -> 0.904, against the forcing student); 2e-5 keeps the
    student's quality (0.062, 0.911): the forcing student already matches the teacher here, and GR-DMD's gradients,
    from a critic trained alongside, are noisy."""
    dmd_critic_lr: float
    dmd_critic_per_generator: int
    eval_samples: int
    """Held-out clips of experiments 1 and 2 (teacher vs untrained, student vs teacher)."""
    switch_samples: int
    """Held-out clips of experiment 3 (switching): every variant and control on each, paired."""
    long_samples: int
    """Held-out clips of experiment 4 (the long stream)."""
    strip_clips: int = 8
    """Frame strips of the first this many switch clips (never chosen ones)."""
    teacher_steps: int = 50
    """The teacher's sampling steps (UniPC, the paper's 50)."""
    teacher_cfg: float = 1.0
    """The teacher's classifier-free guidance on the prompt, and GR-DMD's on the real score. The paper's 3 is for
    Wan's prompts; the world's prompt names only the motion, and guidance 3 measured lower on every world metric
    than none (docs/experiments/world.md)."""
    long_factor: int = 10
    """The long stream is this many times the training clip."""
    switch_variants: tuple[str, ...] = ("all", "no_refresh", "no_withdraw", "no_disentangle", "keep_sink", "restart")
    described_variants: tuple[str, ...] = ("all", "no_refresh", "no_disentangle", "other_person")
    """Experiment 3 again with the prompt describing the person (the full caption: skin, hair, face, wall; never the
    garment), as a user who describes the person writes it: these variants and the controls."""
    position_jitter: int = 12
    """Teacher forcing's ``forcing.position_offset_max`` (latent frames): the switch experiments stream two clips'
    length, and without it the student fails from the first chunk past the training clip (measured: colour 0.84
    -> 0.66, identity error 0.39 -> 0.64, whether the cache evicts or not: the RoPE positions are the cause)."""
    autocast: str = "auto"
    """Every stage's ``model.autocast``. ``auto``: the DiT's linears in bf16 over fp32 master weights (the residual
    stream, norms and timestep embedding in fp32; attention in fp32 on CPU) where the CPU multiplies bf16 in hardware
    (AVX-512 BF16 or AMX), fp32 elsewhere. On the 2-core AVX-512 BF16 CPU an SFT step takes 0.059 s against 0.089 s in
    fp32 (with the fused AdamW), so the same minutes train 1.5x the steps; on a 2-core AVX2 CPU bf16 is emulated and
    a step took 3 s instead of a fraction of one (docs/experiments/world.md, item 11)."""
    compile: bool = False
    """The SFT and teacher-forcing stages' ``model.compile`` (each DiT block compiled with ``torch.compile``; GR-DMD
    stays eager, its rollouts' shapes change chunk by chunk). On the 2-core CPU, measured alone, an SFT step ran 1.17x
    and a teacher-forcing step 1.23x faster for about 15 s of compiling a stage; inside the full run SFT took 0.052 s a
    step against 0.061 s uncompiled (1,298 s against 1,528 s), teacher forcing was not faster (0.103 s against 0.097
    s, in a slower hour; docs/experiments/world.md, item 9). The quick run's few steps would not repay the compile."""
    decay: str = "cosine"
    """The learning rate of every stage after its warm-up (``optim.decay``): a cosine to zero at the stage's last
    step. Measured on the world (docs/experiments/world.md): at the same 400 steps a cosine raised a student's
    garment colour where a constant rate did not, and 6,000 annealed SFT steps took the teacher's training loss from
    0.22 (3,000 at a constant rate) to 0.10."""


FULL = Plan(
    quick=False, train_samples=3200, test_samples=40, model=ModelPlan(),
    batch=8, sft_steps=24000, sft_lr=8e-4, forcing_steps=6000, forcing_lr=3e-4,
    dmd_iterations=500, dmd_batch=4, dmd_lr=2e-5, dmd_critic_lr=1e-4, dmd_critic_per_generator=5,
    eval_samples=16, switch_samples=32, long_samples=4, compile=True,
)
QUICK = Plan(
    quick=True, train_samples=300, test_samples=8, model=ModelPlan(),
    batch=8, sft_steps=3600, sft_lr=1e-3, forcing_steps=450, forcing_lr=2e-4,
    dmd_iterations=5, dmd_batch=2, dmd_lr=2e-5, dmd_critic_lr=1e-4, dmd_critic_per_generator=5,
    eval_samples=2, switch_samples=6, long_samples=1, strip_clips=2, teacher_steps=8, long_factor=2,
    switch_variants=("all", "no_refresh"),
)


def plan_for(quick: bool) -> Plan:
    return QUICK if quick else FULL


# -------------------------------------------------------------------------------------------------------------------
# The results folder
# -------------------------------------------------------------------------------------------------------------------


@dataclass
class Layout:
    """Where each stage writes, under the run's folder. The world, codec and caches are shared by every training
    seed; models, plots and results are per seed."""

    root: Path
    seed: int = 0

    @property
    def world(self) -> Path:
        return self.root / "world"

    @property
    def codec(self) -> Path:
        return self.root / "codec" / "world_vae.safetensors"

    def cache(self, split: str) -> Path:
        return self.root / "cache" / split

    @property
    def seed_root(self) -> Path:
        return self.root / "runs" / f"seed{self.seed}"

    @property
    def init(self) -> Path:
        return self.seed_root / "init" / "random_teacher.safetensors"

    def run(self, stage: str) -> Path:
        return self.seed_root / stage

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
        return self.root / "plots" / f"seed{self.seed}"

    @property
    def results(self) -> Path:
        return self.root / f"results_seed{self.seed}.json"

    def all_results(self) -> list[Path]:
        """Every seed's results written so far, by seed."""
        return sorted(self.root.glob("results_seed*.json"), key=lambda p: int(p.stem.removeprefix("results_seed")))


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


PREPARE_BATCH = 16
"""Clips the world's prepare encodes in one VAE call (4.6x faster a clip than one by one on the 2-core CPU)."""


def prepare_cache(csv: Path, out: Path, *, codec: Path, text: Callable[[list[str]], list[torch.Tensor]],
                  frames: int, size: int) -> int:
    """The latent cache of one split through the training package's own row encoder and manifest writer.

    (``prepare``'s command line takes a umT5 folder; the world has its own caption encoder, so the rows are encoded
    here with :func:`~chameleon_core.training.prepare.encode_rows` and the folder finished with
    :func:`~chameleon_core.training.prepare.write_manifest`, which names the codec for GR-DMD's reward decoding.)
    """
    from safetensors.torch import save_file

    from chameleon_core.checkpoints import load_vae
    from chameleon_core.training.data import read_train_csv
    from chameleon_core.training.latent_cache import ITEMS
    from chameleon_core.training.prepare import encode_rows, write_manifest

    (out / ITEMS).mkdir(parents=True, exist_ok=True)
    vae = load_vae(codec, device="cpu", dtype=torch.float32)
    todo = [row for row in read_train_csv(csv) if not (out / ITEMS / f"{row.key}.safetensors").is_file()]
    batches = [todo[i:i + PREPARE_BATCH] for i in range(0, len(todo), PREPARE_BATCH)]
    for batch in progress(batches, f"prepare {csv.stem} ({PREPARE_BATCH} clips a step)"):
        for row, (tensors, meta) in zip(batch, encode_rows(batch, vae, text, frames, size, size, torch.float32)):
            save_file(tensors, str(out / ITEMS / f"{row.key}.safetensors"), metadata=meta)
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
    from chameleon_core.random_models import random_transformer

    path.parent.mkdir(parents=True, exist_ok=True)
    return save_transformer(path, random_transformer(config, seed=seed), kind="teacher",
                            metadata={"fashionchameleon.note": "untrained: seeded random init of the world DiT"})


def stage_config(stage: str, plan: Plan, layout: Layout, seed: int) -> dict[str, Any]:
    """The training config (the JSON a preset file holds) of one stage of the miniature recipe."""
    common = {
        "model": {"arch": "tiny", "param_dtype": "fp32", "fsdp": False, "activation_checkpointing": False,
                  "autocast": plan.autocast, "text_len": plan.model.text_len},
        "flow": {"shift": 5.0, "quantize_timestep": True},
        "run": {"out": str(layout.run(stage)), "save_every": 10_000, "seed": seed, "export_dtype": "fp32",
                "device": "cpu", "log_every": 1},
    }
    if stage == "sft":
        return {**common, "stage": "sft",
                "model": {**common["model"], "init": str(layout.init), "compile": plan.compile},
                "data": {"cache": str(layout.cache("train")), "batch_size": plan.batch, "full_caption_prob": 0.3,
                         "empty_text_prob": 0.1},
                "optim": {"lr": plan.sft_lr, "betas": [0.9, 0.999], "weight_decay": 0.01, "clip": 1.0,
                          "warmup_steps": max(1, plan.sft_steps // 20), "decay": plan.decay},
                "run": {**common["run"], "steps": plan.sft_steps}}
    if stage == "forcing":
        return {**common, "stage": "forcing",
                "model": {**common["model"], "init": str(layout.teacher), "compile": plan.compile},
                "data": {"cache": str(layout.cache("train")), "batch_size": plan.batch, "full_caption_prob": 0.3,
                         "empty_text_prob": 0.1},
                "optim": {"lr": plan.forcing_lr, "betas": [0.0, 0.999], "weight_decay": 0.01, "clip": 10.0,
                          "warmup_steps": 0, "decay": plan.decay},
                "forcing": {"chunk_frames": 3, "attention": "sdpa", "position_offset_max": plan.position_jitter},
                "run": {**common["run"], "steps": plan.forcing_steps}}
    if stage == "dmd":
        return {**common, "stage": "dmd",
                "model": {**common["model"], "init": str(layout.forcing_student)},
                "data": {"cache": str(layout.cache("train")), "batch_size": plan.dmd_batch,
                         "full_caption_prob": 0.3, "empty_text_prob": 0.0},
                "optim": {"lr": plan.dmd_lr, "betas": [0.0, 0.999], "weight_decay": 0.01, "clip": 10.0,
                          "warmup_steps": 0, "decay": plan.decay},
                "dmd": {"teacher": str(layout.teacher), "critic_lr": plan.dmd_critic_lr,
                        "critic_per_generator": plan.dmd_critic_per_generator, "ema_decay": 0.99,
                        "ema_start": max(1, plan.dmd_iterations // 4), "tau": 0.2, "guidance": plan.teacher_cfg,
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
            "platform": platform.platform(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": native_bf16("cpu")}


def codec_stage(layout: Layout, *, source: Path | None, train: bool, quick: bool) -> dict[str, Any]:
    """Put the run's codec in place (train one, or copy ``source``: by default the codec the pack ships) and run
    its gate; raises :class:`~chameleon_core.world.codec.CodecGateError` when it cannot show a garment."""
    import shutil

    from chameleon_core.world.codec import check_codec_gate, load_codec, train_codec

    report_path = layout.codec.with_suffix(".json")
    layout.codec.parent.mkdir(parents=True, exist_ok=True)
    if layout.codec.is_file() and report_path.is_file():
        report = json.loads(report_path.read_text())
    elif train:
        report = train_codec(layout.codec, quick=quick)
    else:
        src = Path(source) if source is not None else shipped_codec()
        if not src.is_file():
            raise FileNotFoundError(
                f"--codec {src}: no such file; pass a world codec (python -m chameleon_core.world.codec writes one), "
                "or --train-codec to train one in the run")
        shutil.copyfile(src, layout.codec)
        report = {"source": str(src), "note": "trained outside this run" + ("" if source else " (the pack's own)")}
    gate = check_codec_gate(load_codec(layout.codec), path=source or layout.codec)
    report["gate"] = asdict(gate)
    report_path.write_text(json.dumps(report, indent=1, default=str))
    return report


def shipped_codec() -> Path:
    """The world codec the pack ships with its demo (``demo/models/vae/``)."""
    from chameleon_core.tools.demo_models import shipped_files

    return shipped_files()["vae"]


def run_pipeline(out: str | Path, *, quick: bool = False, seed: int = 0, plan: Plan | None = None,
                 codec: str | Path | None = None, train_codec: bool = False) -> dict[str, Any]:
    """Run everything (see the module docstring) into ``out`` for training seed ``seed``; returns the results (also
    ``out/results_seed<seed>.json``; ``out/report.md`` covers every seed run so far). ``codec``: use this codec file
    (default: the one the pack ships); ``train_codec``: train one in the run instead."""
    from chameleon_core import world

    from . import experiments
    from .report import report_markdown

    plan = plan or plan_for(quick)
    layout = Layout(Path(out), seed)
    layout.root.mkdir(parents=True, exist_ok=True)
    timings = Timings.load(layout.seed_root / "timings.json")
    shared = Timings.load(layout.root / "timings_shared.json")
    if "experiments" in timings.seconds:  # a finished run scored again: its experiments time is this run's alone
        del timings.seconds["experiments"]
    size, frames = world.SIZE, world.FRAMES

    with shared.stage("world"):
        csvs = {}
        for split, count in (("train", plan.train_samples), ("test", plan.test_samples)):
            csv = layout.world / f"{split}.csv"
            # one process per torch thread: rendering is single-threaded Python
            csvs[split] = csv if csv.is_file() else world.write_dataset(layout.world, split=split, count=count,
                                                                        size=size, frames=frames, seed=0,
                                                                        workers=torch.get_num_threads())
    with shared.stage("codec"):
        codec_report = codec_stage(layout, source=None if codec is None else Path(codec), train=train_codec,
                                   quick=quick)
    with shared.stage("prepare"):
        def text(prompts: list[str]) -> list[torch.Tensor]:
            return [world.encode_caption(p, max_len=plan.model.text_len) for p in prompts]

        for split, csv in csvs.items():
            manifest = layout.cache(split) / "manifest.json"
            if not manifest.is_file():
                prepare_cache(csv, layout.cache(split), codec=layout.codec, text=text, frames=frames, size=size)
    layout.seed_root.mkdir(parents=True, exist_ok=True)
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
                   + (f" --seed {seed}" if seed else "") + (f" --codec {codec}" if codec else "")
                   + (" --train-codec" if train_codec else "")
                   + (f" --patch {plan.model.patch}" if plan.model.patch != ModelPlan.patch else ""),
        "seed": seed,
        "plan": asdict(plan),
        "model_config": asdict(config),
        "codec": codec_report,
        "timings_s": {**shared.seconds, **timings.seconds},
        "wall_s": round(shared.total + timings.total, 1),
        "machine": machine(),
        "files": {"student": str(layout.student), "teacher": str(layout.teacher), "codec": str(layout.codec)},
    })
    layout.results.write_text(json.dumps(results, indent=1, default=str))
    all_results = [json.loads(p.read_text()) for p in layout.all_results()]
    (layout.root / "report.md").write_text(report_markdown(all_results))
    logger.info("results: %s (%.0f s)", layout.results, results["wall_s"])
    return results
