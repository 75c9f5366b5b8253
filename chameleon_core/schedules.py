"""Flow-matching schedules and parameterisation conversions, in one module.

Wan / FashionChameleon use rectified flow: ``x_t = (1 - sigma) x0 + sigma * eps`` and the network predicts the
velocity ``v = eps - x0``; the timestep fed to the network is ``t = 1000 * sigma``. Sampling warps sigmas with
``shift``: ``sigma' = shift * sigma / (1 + (shift - 1) * sigma)`` (shift 5 for Wan2.2 TI2V-5B at 704p).

The few-step student (authors' ``stream_wan22_ic_inference.py``) denoises at timesteps [1000, 750, 500, 250]
mapped through the shift-5 table, i.e. ``shifted[1000 - s]``: [1000, 937.5, 833.33, 625].

:class:`StepSchedule` is one chunk's steps as a student's own loop runs them (which σ, which timestep the DiT is
fed, which sampler); :func:`step_schedule` builds it from :class:`~chameleon_core.config.StreamSettings` (the
profiles of the public students differ exactly here: ``docs/profiles.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .config import StreamSettings

NUM_TRAIN_TIMESTEPS = 1000
STUDENT_TIMESTEPS = (1000, 750, 500, 250)
"""The student's denoising timesteps before warping."""


def shift_sigma(sigma: torch.Tensor | float, shift: float) -> torch.Tensor | float:
    """``shift * sigma / (1 + (shift - 1) * sigma)``."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def shifted_timestep_table(shift: float, n: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """The training table ``t_i = 1000 * shift(1 - i / 1000)`` for i in 0..n-1 (float64, descending from 1000)."""
    sigma = 1.0 - torch.arange(n, dtype=torch.float64) / n
    return shift_sigma(sigma, shift) * NUM_TRAIN_TIMESTEPS


def student_timesteps(shift: float = 5.0, steps: tuple[int, ...] = STUDENT_TIMESTEPS) -> list[float]:
    """The student's warped denoising list: ``table[1000 - s]`` for each s; [1000, 937.5, 833.3, 625] at shift 5."""
    for s in steps:
        if not 0 < s <= NUM_TRAIN_TIMESTEPS:
            raise ValueError(f"student timesteps must lie in (0, 1000], got {s} in {steps}")
    table = shifted_timestep_table(shift)
    return [float(table[NUM_TRAIN_TIMESTEPS - s]) for s in steps]


def model_timestep(t: float, dtype: torch.dtype) -> int:
    """The timestep the DiT is fed for the exact timestep ``t``, quantized as the authors build it.

    Their loops make the per-token timestep as ``(ones(int64) * t).to(latent dtype).long()``: the float is rounded
    to the compute dtype, then truncated. So the model sees 1000 / 937 / 833 / 625 in fp32 and 1000 / 936 / 832 / 624
    in bf16 for the student's [1000, 937.5, 833.3, 625]; the student was distilled on exactly those values. σ for x0
    and re-noising stays exact (``t / 1000``).
    """
    return int(torch.tensor(float(t), dtype=torch.float32).to(dtype).long())


def student_steps_for(count: int) -> tuple[int, ...]:
    """Evenly spaced raw student timesteps for ``count`` steps: 4 -> (1000, 750, 500, 250), 2 -> (1000, 500)."""
    if count < 1:
        raise ValueError(f"steps must be >= 1, got {count}")
    return tuple(NUM_TRAIN_TIMESTEPS - i * NUM_TRAIN_TIMESTEPS // count for i in range(count))


def teacher_sigmas(steps: int, shift: float) -> torch.Tensor:
    """Sigmas of a ``steps``-step sampler, as Wan's flow UniPC / Euler set them: linear from 1 - 1/1000 down to 0,
    shifted, with a final 0. Returns ``steps + 1`` values (float64)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    sigma_max = 1.0 - 1.0 / NUM_TRAIN_TIMESTEPS
    sigmas = torch.linspace(sigma_max, 0.0, steps + 1, dtype=torch.float64)[:-1]
    return torch.cat([shift_sigma(sigmas, shift), sigmas.new_zeros(1)])


def x0_from_velocity(x_t: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """``x0 = x_t - sigma * v``."""
    return x_t - sigma * v


def noise_from_velocity(x_t: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """``eps = x_t + (1 - sigma) * v``."""
    return x_t + (1 - sigma) * v


def velocity(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The flow-matching target ``v = eps - x0``."""
    return noise - x0


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """``x_t = (1 - sigma) x0 + sigma eps``."""
    return (1 - sigma) * x0 + sigma * noise


def nearest_table_sigma(t: float, shift: float) -> float:
    """σ of the training-table entry nearest ``t`` (the Self-Forcing family's ``FlowMatchScheduler`` lookup: CausVid
    feeds unwarped steps such as 757 and takes σ from the entry closest to it)."""
    table = shifted_timestep_table(shift)
    i = int(torch.argmin((table - float(t)).abs()))
    return float(table[i]) / NUM_TRAIN_TIMESTEPS


@dataclass(frozen=True)
class StepSchedule:
    """One chunk's denoising steps as a student's loop runs them.

    ``timesteps``: each step's timestep (e.g. [1000, 937.5, 833.3, 625]); ``sigmas``: σ of each step, used for x0 and
    re-noising (``renoise``), or the solver's σ list ending in 0 (``unipc``: one more value than steps);
    ``sampler`` / ``timestep_input``: see :data:`~chameleon_core.config.SAMPLERS` /
    :data:`~chameleon_core.config.TIMESTEP_INPUTS`.
    """

    timesteps: tuple[float, ...]
    sigmas: tuple[float, ...]
    sampler: str = "renoise"
    timestep_input: str = "rounded"

    def __len__(self) -> int:
        return len(self.timesteps)

    def __getitem__(self, step: int) -> float:
        return self.timesteps[step]

    def fed(self, step: int, dtype: torch.dtype) -> float:
        """The timestep the DiT is fed at ``step`` for a model computing in ``dtype``."""
        if self.timestep_input == "rounded":
            return float(model_timestep(self.timesteps[step], dtype))
        return float(self.timesteps[step])

    @staticmethod
    def from_timesteps(timesteps: tuple[float, ...] | list[float]) -> StepSchedule:
        """FashionChameleon's schedule for a list of warped timesteps: σ = t / 1000, the DiT fed the rounded value."""
        ts = tuple(float(t) for t in timesteps)
        return StepSchedule(ts, tuple(t / NUM_TRAIN_TIMESTEPS for t in ts))


def step_schedule(settings: StreamSettings, steps: int | None = None) -> StepSchedule:
    """The chunk schedule of a stream's settings; ``steps`` overrides the step count (evenly spaced raw steps)."""
    n = settings.steps if steps is None else steps
    if settings.sampler == "unipc":
        # LongLive 2.0: Wan's FlowUniPCMultistepScheduler over n steps at the shift; the DiT sees int64(σ * 1000).
        sigmas = teacher_sigmas(n, settings.shift)
        fed = tuple(float(int(float(s) * NUM_TRAIN_TIMESTEPS)) for s in sigmas[:-1])
        return StepSchedule(fed, tuple(float(s) for s in sigmas), "unipc", "exact")
    raw = settings.student_timesteps if steps is None and settings.student_timesteps is not None \
        else student_steps_for(n)
    if settings.warp:
        ts = tuple(student_timesteps(settings.shift, raw))
        return StepSchedule(ts, tuple(t / NUM_TRAIN_TIMESTEPS for t in ts), "renoise", settings.timestep_input)
    ts = tuple(float(s) for s in raw)
    return StepSchedule(ts, tuple(nearest_table_sigma(t, settings.shift) for t in ts), "renoise",
                        settings.timestep_input)
