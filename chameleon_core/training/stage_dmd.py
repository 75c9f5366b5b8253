"""Stage 3: gradient-reweighted DMD (GR-DMD) -- the few-step causal student from the teacher-forcing checkpoint.

The loop, per iteration ``step`` (``run.steps`` iterations; the 5B preset's 2000 give 400 generator updates):

1. every ``dmd.critic_per_generator``-th iteration (5: iterations 0, 5, 10, ...), a **generator update**: a
   Self-Forcing rollout of the generator with gradient at one shared exit step
   (:func:`~chameleon_core.training.dmd.rollout`), per-frame weights from the reward of the decoded frames
   (:func:`~chameleon_core.training.dmd.frame_rewards`, ``softmax(r / -tau)``), and the DMD loss against the
   frozen SFT teacher with CFG 3 (real score) and the critic (fake score); AdamW (lr 2e-6, betas (0, 0.999),
   wd 0.01, clip 10); then the EMA (0.99, fp32, from iteration ``dmd.ema_start``) folds the new weights in;
2. every iteration, a **critic update**: a fresh rollout without gradient, then the critic's flow-matching loss on
   it (AdamW, lr 4e-7).

Models: generator from ``model.init`` (the teacher-forcing student), critic and frozen real score from
``dmd.teacher`` (the SFT teacher), and the EMA as a fourth, frozen copy sharded like the generator, so checkpoints
(DCP, resharding-safe) and the export treat it like any model. The export is the EMA, written as a *student*
through :func:`chameleon_core.checkpoints.save_transformer` (``<run>/export/student.safetensors``).

Randomness: the exit step is a function of (seed, iteration), the same on every rank; noise and timesteps are drawn
per sample from :func:`~chameleon_core.training.latent_cache.sample_generator` keyed by (seed, iteration, global
slot), so the result does not depend on the number of processes, and a resumed run draws what the uninterrupted
run would have.

Settings read from ``dmd.extra``: ``vae`` (the Wan VAE file that decodes frames for the reward; default: the VAE
the latent cache was prepared with, as its manifest names it; ``random:PRESET`` for a seeded tiny VAE),
``negative`` (a prompt-embeddings file of the Wan
negative prompt written by ``python -m chameleon_core.tools.prompt_embeds``; default: the latent cache's empty prompt)
and ``offload_teacher`` (``true``: the frozen teacher's shards stay in host memory and stream to the GPU per unit,
FSDP2's CPU offload; saves 4 bytes per parameter / GPU count of GPU memory, costs host-to-device copies).

Failures follow the runtime's policy (:mod:`.runtime`, :mod:`.faults`): an error on any process ends the job at
once; a NaN/inf generator or critic loss stops the run before the update.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import torch

from .config import TrainConfig
from .distributed import mean_across
from .dmd import (
    EMA,
    SampleRandom,
    TimestepSampling,
    critic_loss,
    draw_exit_step,
    frame_rewards,
    generator_loss,
    reward_weights,
    rollout,
    rollout_settings,
    vae_decoder,
)
from .latent_cache import Batch, LatentLoader, sample_generator
from .parallel import run_inside
from .reward import STAND_IN_NAMES, reward_from_spec
from .runtime import Run, optimizer_update

logger = logging.getLogger(__name__)

# Streams of sample_generator, one per use, so the draws never overlap (stream 1 is the caption choice).
_GEN_NOISE, _GEN_DMD, _CRITIC_NOISE, _CRITIC_FLOW = 10, 11, 12, 13


def run_dmd(cfg: TrainConfig | Run) -> Path | None:
    """Run the GR-DMD stage (one process or one of a torchrun group).

    ``cfg``: the stage config (the run is started and closed here, like the other stages), or a
    :class:`~chameleon_core.training.runtime.Run` already started by the caller, who then closes it. Returns the
    exported student's path on rank 0 when the run finished and ``run.export`` is on, else None.
    """
    if isinstance(cfg, Run):
        with cfg.failing_fast():
            return DMDTrainer(cfg).train()
    if cfg.stage != "dmd":
        raise ValueError(f"run_dmd needs a config with stage 'dmd', got {cfg.stage!r}")
    run = Run.start(cfg)
    try:
        with run.failing_fast():
            return DMDTrainer(run).train()
    finally:  # reached after an error with one process only; close() then runs no collective
        run.close()


class DMDTrainer:
    """The GR-DMD stage on top of a started :class:`~chameleon_core.training.runtime.Run`."""

    def __init__(self, run: Run) -> None:
        cfg, d = run.cfg, run.cfg.dmd
        if cfg.stage != "dmd":
            raise ValueError(f"the DMD stage needs a config with stage 'dmd', got {cfg.stage!r}")
        self.run, self.cfg, self.d = run, cfg, d
        if d.teacher is None:
            raise ValueError(
                "dmd.teacher is not set; give the SFT teacher's weights (the real score and the critic's start) with "
                "--set dmd.teacher=PATH, or random:SEED for a test run"
            )
        if d.critic_per_generator < 1:
            raise ValueError(f"dmd.critic_per_generator must be >= 1, got {d.critic_per_generator}; the paper uses 5")
        # 1. Models: generator (trained), critic (trained), real score (frozen), EMA (frozen copy of the generator).
        self.generator = run.build_model(cfg.model.init)
        self.critic = run.build_model(d.teacher)
        self.teacher = run.build_model(d.teacher, trainable=False, offload=bool(d.extra.get("offload_teacher")))
        self.ema_model = run.build_model(cfg.model.init, trainable=False)
        self.ema = EMA(self.generator, d.ema_decay, d.ema_start, into=self.ema_model)
        # 2. Optimisers: AdamW from `optim` for the generator, the critic at dmd.critic_lr.
        self.opt_g = run.optimizer(self.generator)
        self.opt_c = run.optimizer(self.critic, lr=d.critic_lr)
        # A decaying schedule ends at the last update of each: the generator updates on every
        # critic_per_generator-th iteration, the critic on every one.
        self.sched_g = run.scheduler(self.opt_g, total_steps=-(-cfg.run.steps // d.critic_per_generator))
        self.sched_c = run.scheduler(self.opt_c)
        # 3. Data, reward, negative prompt.
        self.loader: LatentLoader = run.loader()
        self.reward = reward_from_spec(d.reward, device=run.device)
        self.decode = self._decoder() if self.reward is not None else None
        self.negative = self._negative_context().to(run.device)
        self.timesteps = TimestepSampling(cfg.flow.shift, d.t_min, d.t_max, cfg.flow.quantize_timestep)

    # -- setup helpers ------------------------------------------------------------------------------------------

    def _decoder(self):
        """Decoding for the reward: the VAE of ``dmd.extra.vae``, else the one the latent cache was prepared with."""
        from .prepare import make_vae

        spec = self.d.extra.get("vae") or self.loader.cache.meta.get("vae")
        if spec is None:
            if self.d.reward not in STAND_IN_NAMES:
                raise ValueError(
                    "the reward decodes frames, so GR-DMD needs the Wan VAE and the latent cache does not name one: "
                    "--set dmd.extra.vae=PATH (Wan2.2_VAE.pth), or dmd.reward=none for unweighted DMD"
                )
            family = "wan2.2-tiny" if self.generator.config.in_dim == 48 else "wan2.1-tiny"
            spec = f"random:{family}"
        logger.info("the reward decodes frames with the VAE %s", spec)
        vae = make_vae(str(spec), self.run.device)
        if self.run.device.type == "cuda":
            vae = vae.to(dtype=torch.bfloat16)  # decoding 81 frames at 1280x704 for the reward; no gradient
        vae.model.requires_grad_(False)
        return vae_decoder(vae)

    def _negative_context(self) -> torch.Tensor:
        path = self.d.extra.get("negative")
        text_dim = self.generator.config.text_dim
        if path:
            from chameleon_core.text import load_prompt_embeddings

            return load_prompt_embeddings(path, text_dim=text_dim).float()
        if self.d.negative_prompt:
            raise ValueError(
                f"dmd.negative_prompt is text ({self.d.negative_prompt[:40]!r}...), but training reads embeddings; "
                "encode it once with `python -m chameleon_core.tools.prompt_embeds --encoder DIR --prompt TEXT --out FILE` and set "
                "dmd.extra.negative=FILE"
            )
        logger.warning(
            "no negative prompt embedding (dmd.extra.negative); the real score's unconditional branch uses the empty "
            "prompt from the latent cache. The paper uses Wan's negative prompt: precompute it with "
            "python -m chameleon_core.tools.prompt_embeds"
        )
        return self.loader.cache.load(0)["text_empty"][None].float()

    # -- pieces of an iteration --------------------------------------------------------------------------------

    def _rng(self, part: Batch, step: int, stream: int) -> SampleRandom:
        seed = self.cfg.run.seed
        return SampleRandom.from_generators([sample_generator(seed, step, slot, stream) for slot in part.slots])

    def _self_referenced(self, batch: Batch, step: int) -> Batch:
        """The batch with some references re-drawn by the generator (``dmd.self_reference``; the batch itself at 0)."""
        if self.d.self_reference <= 0:
            return batch
        from .self_reference import redrawn_references

        reference = redrawn_references(self.generator, batch, step, probability=self.d.self_reference,
                                       vae=self.d.self_reference_vae, chunk_frames=self.d.chunk_frames,
                                       shift=self.cfg.flow.shift, seed=self.cfg.run.seed,
                                       setting="dmd.self_reference")
        return dataclasses.replace(batch, reference=reference)

    def _rollout(self, part: Batch, step: int, exit_step: int, *, grad: bool, stream: int) -> torch.Tensor:
        c = self.d.chunk_frames
        frames = part.video.shape[2]
        if frames % c:
            raise ValueError(
                f"the latent cache's videos have {frames} latent frames, not a multiple of dmd.chunk_frames={c}; "
                "prepare the cache with 4k+1 pixel frames whose latent count is a multiple of the chunk"
            )
        settings = rollout_settings(c, frames // c, steps=self.d.denoise_steps, shift=self.cfg.flow.shift)
        return run_inside(
            self.generator, rollout, context=part.context, reference=part.reference, garment=part.garment,
            settings=settings, num_chunks=frames // c, exit_step=exit_step, rng=self._rng(part, step, stream),
            grad=grad,
        )

    def _generator_loss(self, part: Batch, step: int, exit_step: int) -> tuple[torch.Tensor, dict[str, float]]:
        x = self._rollout(part, step, exit_step, grad=True, stream=_GEN_NOISE)
        weights, extra = None, {}
        if self.reward is not None:
            rewards = frame_rewards(x, decode=self.decode, reward=self.reward, chunk_frames=self.d.chunk_frames)
            weights = reward_weights(rewards, self.d.tau)
            extra["reward"] = float(rewards.mean())
        terms = generator_loss(
            x, teacher=self.teacher, critic=self.critic, positive=part.context, negative=self.negative,
            reference=part.reference, garment=part.garment, rng=self._rng(part, step, _GEN_DMD), weights=weights,
            timesteps=self.timesteps, guidance=self.d.guidance,
        )
        extra.update(dmd_t=float(terms.timesteps.float().mean()), dmd_grad=float(terms.grad_norm.mean()))
        return terms.loss, extra

    def _critic_loss(self, part: Batch, step: int, exit_step: int) -> torch.Tensor:
        with torch.no_grad():
            x = self._rollout(part, step, exit_step, grad=False, stream=_CRITIC_NOISE)
        return critic_loss(
            self.critic, x, context=part.context, reference=part.reference, garment=part.garment,
            rng=self._rng(part, step, _CRITIC_FLOW), timesteps=self.timesteps,
        )

    def _update(self, model, optimizer, scheduler, micro: list[Batch], total: int, loss_fn, *, step: int,
                name: str) -> dict[str, float]:
        """One optimiser step of ``model`` over the micro-batches (:func:`~.runtime.optimizer_update`)."""
        return optimizer_update(self.run, model, optimizer, scheduler, micro, total, loss_fn, step=step, name=name)

    # -- the loop ---------------------------------------------------------------------------------------------

    def train(self) -> Path | None:
        run, cfg, d = self.run, self.cfg, self.d
        parts = {
            "generator": (self.generator, self.opt_g),
            "critic": (self.critic, self.opt_c),
            "generator_ema": (self.ema_model, None),
        }
        schedulers = {"generator": self.sched_g, "critic": self.sched_c}
        run.resume(parts, schedulers, self.loader)
        start = run.step
        mb = run.micro_batch
        while run.step < cfg.run.steps:
            step = run.step
            run.phase = f"iteration {step + 1} of {cfg.run.steps}"
            run.checkpoint_progress()
            t0 = time.perf_counter()
            batch = self._self_referenced(self.loader.next(step), step)
            micro = batch.split(mb)
            values: dict[str, float] = {}
            # 1. Generator update (every critic_per_generator-th iteration), then the EMA.
            if step % d.critic_per_generator == 0:
                exit_step = draw_exit_step(d.denoise_steps, cfg.run.seed, step, "generator")
                g = self._update(
                    self.generator, self.opt_g, self.sched_g, micro, len(batch),
                    lambda part, step=step, exit_step=exit_step: self._generator_loss(part, step, exit_step),
                    step=step, name="generator loss",
                )
                self.ema.update(self.generator, step)
                values.update({f"generator_{k}" if k in ("loss", "grad_norm", "lr") else k: v for k, v in g.items()})
                values["exit_step"] = exit_step
            # 2. Critic update (every iteration) on a fresh rollout without gradient.
            exit_step = draw_exit_step(d.denoise_steps, cfg.run.seed, step, "critic")
            c = self._update(
                self.critic, self.opt_c, self.sched_c, micro, len(batch),
                lambda part, step=step, exit_step=exit_step: (self._critic_loss(part, step, exit_step), {}),
                step=step, name="critic loss",
            )
            values.update({f"critic_{k}": v for k, v in c.items()})
            run.step = step + 1
            seconds = time.perf_counter() - t0
            stop = cfg.run.stop_after is not None and run.step - start >= cfg.run.stop_after
            if run.step % cfg.run.save_every == 0 or run.step == cfg.run.steps or stop:
                run.save(parts, schedulers, self.loader)
            if run.step % cfg.run.log_every == 0 or run.step == cfg.run.steps:
                logged = {k: v if k.endswith("lr") or k.endswith("grad_norm") else mean_across(v, run.device)
                          for k, v in values.items()}
                run.log(run.step, **logged, seconds_per_step=seconds, samples_per_second=cfg.data.batch_size / seconds)
            if stop:
                logger.info("stopping after %d iterations (run.stop_after) at %d", cfg.run.stop_after, run.step)
                run.phase = "last checkpoint"
                run.finish_checkpoints()
                return None
        run.phase = "last checkpoint"
        run.finish_checkpoints()
        if not cfg.run.export:
            return None
        # 3. Export the EMA generator as the student the pack streams.
        return run.export(self.ema_model, kind="student", name="student")
