"""Flow-matching schedules: the student's warped steps and the teacher's sigmas, from the formulas in the paper."""

from __future__ import annotations

import pytest
import torch

from chameleon_core.schedules import (
    add_noise,
    noise_from_velocity,
    student_steps_for,
    student_timesteps,
    teacher_sigmas,
    velocity,
    x0_from_velocity,
)


def test_student_timesteps_are_the_shift5_warp_of_1000_750_500_250():
    # t = 1000 * 5s / (1 + 4s) with s = raw / 1000: [1000, 937.5, 833.33, 625] (docs/design.md, the facts).
    assert student_timesteps(5.0) == pytest.approx([1000.0, 937.5, 2500 / 3, 625.0], abs=1e-9)
    assert student_timesteps(1.0) == pytest.approx([1000.0, 750.0, 500.0, 250.0])
    assert student_steps_for(4) == (1000, 750, 500, 250) and student_steps_for(2) == (1000, 500)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        student_steps_for(0)


def test_teacher_sigmas_follow_wan_flow_unipc():
    s = teacher_sigmas(50, 5.0)
    assert s.shape == (51,) and s[-1] == 0 and torch.all(s[:-1] > s[1:])
    raw0 = 1 - 1 / 1000  # Wan's sigma_max
    assert s[0].item() == pytest.approx(5 * raw0 / (1 + 4 * raw0))
    raw = 1 - 1 / 1000 - 10 * (1 - 1 / 1000) / 50
    assert s[10].item() == pytest.approx(5 * raw / (1 + 4 * raw))


def test_parameterisation_round_trip():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    for sigma in (0.1, 0.625, 0.9375):
        xt = add_noise(x0, eps, sigma)
        v = velocity(x0, eps)
        torch.testing.assert_close(x0_from_velocity(xt, v, sigma), x0)
        torch.testing.assert_close(noise_from_velocity(xt, v, sigma), eps)
