"""The miniature pipeline on the synthetic world: the ``--quick`` run end to end, and its pieces on known cases.

``test_quick_run_*`` run ``python -m chameleon_core.training.world run --quick`` once, in-process (world -> codec -> prepare
-> SFT -> teacher forcing -> GR-DMD -> streams with switches -> metrics and plots; 200 s on the two cores shared with
other jobs, load ~10; about a minute on an idle machine), and assert only what that size can honestly show. At the
quick size (a 30-second codec at ~13 dB PSNR, 80 SFT steps on 32 clips) no garment is visible in decoded frames, so
the pixel metrics of the trained and the untrained teacher are equal within noise; what SFT does learn is its own
objective on held-out combinations. The held-out flow loss (unweighted velocity MSE on 4 held-out clips at five
noise levels, two noise draws each; ``experiments.heldout_flow_loss``), measured with this code:

====  ===============  =========  =============  =================  ==================
seed  trained teacher  untrained  zero velocity  trained/untrained  trained/zero
====  ===============  =========  =============  =================  ==================
0     1.055            2.589      1.187          0.41               0.89
1     1.094            2.531      1.386          0.43               0.79
2     1.020            2.647      1.179          0.39               0.87
====  ===============  =========  =============  =================  ==================

("zero velocity" predicts 0 everywhere: the loss of a model that learned nothing about the clips.) So the test
asserts the trained teacher's held-out loss is below 0.6 x the untrained model's (measured 0.39-0.43) and below the
zero-velocity baseline (measured 0.79-0.89 of it), and that everything the full run writes is there and readable:
the exported student loads through the pack's loader as a student, the codec loads, every plot is a PNG, every
experiment has its rows.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from chameleon_core.training.world import pipeline
from chameleon_core.training.world.experiments import (
    chunk_frame_ranges,
    garment_shares,
    switch_latency,
)
from chameleon_core.training.world.plots import frame_strip, line_plot
from chameleon_core.training.world.reward import PaletteReward, world_palette


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- pieces on known cases ---------------------------------------------------------------------------------------------


def test_palette_reward_is_zero_on_a_rendered_frame_and_negative_on_blur():
    from chameleon_core.world import render, sample_world

    clip = render(sample_world(0, "test"), frames=5).float_frames()  # [T, H, W, 3]
    frames = clip.permute(0, 3, 1, 2) * 2 - 1
    reward = PaletteReward()
    assert torch.allclose(reward(frames), torch.zeros(5), atol=2e-3)
    blurred = torch.nn.functional.avg_pool2d(frames, 5, stride=1, padding=2)
    assert (reward(blurred) < -0.01).all()
    grey = torch.zeros(1, 3, 8, 8)  # mid grey is far from every palette colour
    nearest = torch.cdist(torch.full((1, 3), 0.5), world_palette()).min()
    assert reward(grey).item() == pytest.approx(-nearest.item(), abs=1e-6)


def test_garment_shares_of_a_rendered_switch():
    from chameleon_core.world import render, sample_switch_garment, sample_world

    s = sample_world(1, "test")
    new = sample_switch_garment(s, 0)
    clip = render(s, frames=9, switch_to=new, switch_frame=5).float_frames()
    before = garment_shares(clip[:5], [s.garment.colour, new.colour])
    after = garment_shares(clip[5:], [new.colour, s.garment.colour])
    assert before[s.garment.colour] == 1.0 and before[new.colour] == 0.0
    assert after[new.colour] == 1.0 and after[s.garment.colour] == 0.0
    assert math.isnan(garment_shares(torch.full((2, 4, 4, 3), 0.5), ["red"])["red"])  # no garment-coloured pixel


def test_chunk_frame_ranges_follow_the_causal_decode():
    # 9 latent frames in chunks of 3: 1 + 4 + 4 = 9 pixel frames, then 12 and 12 (33 in all)
    assert chunk_frame_ranges(9) == [range(9), range(9, 21), range(21, 33)]
    assert chunk_frame_ranges(6, chunk=3)[-1].stop == 21


def test_switch_latency():
    rows = [{"target_share": 0.0, "old_share": 1.0}] * 3 + [{"target_share": 0.2, "old_share": 0.7},
                                                           {"target_share": 0.6, "old_share": 0.3}]
    assert switch_latency(rows, 3) == 1
    assert switch_latency(rows[:4], 3) is None


def test_plots_are_pngs(tmp_path):
    p = line_plot(tmp_path / "a.png", {"x": [0.1, 0.5, math.nan, 0.2], "y": [1, 2, 3, 4]}, title="t", xlabel="chunk",
                  ylabel="v", vline=1.5)
    assert Image.open(p).size == (640, 400)
    video = torch.rand(6, 8, 8, 3)
    s = frame_strip(tmp_path / "b.png", {"a": video, "b": video}, [0, 2, 5], scale=2, marker=2)
    with Image.open(s) as im:
        assert im.size[1] >= 2 * 16 and im.format == "PNG"


def test_stage_configs_are_valid_training_configs(tmp_path):
    from chameleon_core.training.config import config_from_dict

    layout = pipeline.Layout(tmp_path)
    for plan in (pipeline.QUICK, pipeline.FULL):
        for stage in ("sft", "forcing", "dmd"):
            cfg = config_from_dict(pipeline.stage_config(stage, plan, layout, seed=3))
            assert cfg.stage == stage and cfg.run.seed == 3 and cfg.model.text_len == plan.model.text_len
    dmd = config_from_dict(pipeline.stage_config("dmd", pipeline.FULL, layout, seed=0))
    assert dmd.dmd.teacher == str(layout.teacher) and dmd.model.init == str(layout.forcing_student)
    assert dmd.dmd.denoise_steps == 4 and dmd.dmd.chunk_frames == 3 and dmd.dmd.tau == 0.2


# -- the quick run -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from chameleon_core.training.world.__main__ import main

    out = tmp_path_factory.mktemp("world_quick")
    assert main(["--log-level", "WARNING", "run", "--out", str(out), "--quick"]) == 0
    return out


def test_quick_run_writes_every_result(quick_run):
    from chameleon_core.checkpoints import checkpoint_kind, load_transformer
    from chameleon_core.world import load_codec

    results = json.loads((quick_run / "results.json").read_text())
    for key in ("teacher_vs_untrained", "student_vs_teacher", "switching", "long_stream", "series", "plots",
                "timings_s", "machine", "command"):
        assert key in results, key
    assert set(results["switching"]) == set(pipeline.QUICK.switch_variants)
    assert len(results["series"]["long_stream"]) == pipeline.QUICK.long_factor * 3
    for name in results["plots"]:
        with Image.open(quick_run / "plots" / name) as im:
            assert im.format == "PNG"
    layout = pipeline.Layout(quick_run)
    assert checkpoint_kind(layout.student) == "student"
    student = load_transformer(layout.student, dtype=torch.float32)
    assert student.config.dim == pipeline.QUICK.model.dim
    assert load_codec(layout.codec).config.z_dim == 48
    assert (quick_run / "report.md").is_file()


def test_quick_run_teacher_learns_on_held_out_combinations(quick_run):
    results = json.loads((quick_run / "results.json").read_text())["teacher_vs_untrained"]
    trained = results["teacher_sft"]["heldout_flow_loss"]
    untrained = results["untrained"]["heldout_flow_loss"]
    zero = results["zero_velocity"]["heldout_flow_loss"]
    assert trained < 0.6 * untrained, (trained, untrained)
    assert trained < zero, (trained, zero)
