"""The miniature pipeline on the synthetic world: the ``--quick`` run end to end, and its pieces on known cases.

``test_quick_run_*`` run ``python -m chameleon_core.training.world run --quick`` once, in-process (world -> the
shipped codec and its gate -> prepare -> SFT -> teacher forcing -> GR-DMD -> streams with switches -> metrics and
plots): 311 s alone on two cores with AVX-512 BF16 (2 torch threads; ``--autocast auto``, the default, trains in
bf16 there; SFT 230 s, prepare 11 s with 16 clips a codec call, experiments 18 s), 617 s on two AVX2 cores (AMD
EPYC), where it trains in fp32 (SFT 453 s at 0.11 s a step; in bf16, emulated there, a step took 3 s) and scored
the same (switch 0.658 [0.463, 0.814]). Measured with this code (seed 0, 6 held-out switch clips,
means with bootstrap 95% intervals; a switch starts a new clip whose first latent frame is not shown):

========================================  =====================  =====================================
quantity                                  measured               asserted
========================================  =====================  =====================================
target colour, 1st chunk after the switch  0.661 [0.463, 0.827]   >= 0.4
old garment's colour before the switch     0.598 [0.425, 0.710]   >= 0.35
shuffled garment image (control)           0.000 [0.000, 0.000]   < switched - 0.3
switch without garment KV refresh          0.028 [0.000, 0.082]   < switched - 0.3
constant frame (control)                   0.0                    == 0
held-out flow loss: teacher / untrained    0.122 / 2.541          < 0.6 x untrained, < zero velocity (1.306)
========================================  =====================  =====================================

The issue's CI bound (>= 0.8 after the switch) is the full run's target, not the quick size's: the quick run trains
3,600 SFT steps on 300 clips, and its switch lands at 0.66 (the lower end of its interval 0.46); the full run's
numbers are in docs/experiments/world.md.
What the quick run does show, with margin, is a switch that comes from the garment image: the same stream given
another clip's garment image, and the switch without refresh, stay near 0. The shipped demo model is tested on its
own in ``tests/test_demo_model.py``.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from PIL import Image

from chameleon_core.training.world import pipeline, stats
from chameleon_core.training.world.controls import other_person, other_person_prompt, shuffled_garment
from chameleon_core.training.world.experiments import chunk_frame_ranges, load_eval_samples
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


def test_chunk_frame_ranges_follow_the_causal_decode():
    # 9 latent frames in chunks of 3: 1 + 4 + 4 = 9 pixel frames, then 12 and 12 (33 in all)
    assert chunk_frame_ranges(9) == [range(9), range(9, 21), range(21, 33)]
    assert chunk_frame_ranges(6, chunk=3)[-1].stop == 21


def test_bootstrap_intervals_cover_the_mean_and_paired_differences_see_a_shift():
    values = [0.1 * i for i in range(10)]
    est = stats.bootstrap(values, seed=0)
    assert est.mean == pytest.approx(0.45) and est.low < 0.45 < est.high and est.n == 10
    assert stats.bootstrap([0.5, math.nan, 0.5]).as_dict() == {"mean": 0.5, "low": 0.5, "high": 0.5, "n": 2}
    shifted = [v + 0.2 for v in values]
    diff = stats.paired_difference(shifted, values)
    assert diff.mean == pytest.approx(0.2) and diff.low == pytest.approx(0.2) and diff.high == pytest.approx(0.2)
    noisy = stats.paired_difference([v + (0.3 if i % 2 else -0.3) for i, v in enumerate(values)], values)
    assert noisy.low < 0 < noisy.high  # no effect: the interval covers zero
    with pytest.raises(ValueError, match="same clips"):
        stats.paired_difference([1.0], [1.0, 2.0])


def test_shuffled_garment_never_has_the_colour_it_is_scored_against():
    from types import SimpleNamespace

    from chameleon_core.world import sample_world

    samples = [SimpleNamespace(sample=sample_world(i, "test")) for i in range(6)]
    for i, s in enumerate(samples):
        assert shuffled_garment(samples, i, s.sample.garment.colour).colour != s.sample.garment.colour
    same = [SimpleNamespace(sample=samples[0].sample)] * 3  # every sample wears the same colour: recoloured
    assert shuffled_garment(same, 1, samples[0].sample.garment.colour).colour != samples[0].sample.garment.colour


def test_other_person_differs_in_skin_and_hair_where_the_samples_allow():
    from types import SimpleNamespace

    from chameleon_core.world import sample_world

    samples = [SimpleNamespace(sample=sample_world(i, "test")) for i in range(12)]
    for i, s in enumerate(samples):
        me, other = s.sample.identity, other_person(samples, i).sample.identity
        if any(o.sample.identity.skin != me.skin and o.sample.identity.hair != me.hair for o in samples):
            assert other.skin != me.skin and other.hair != me.hair, (me, other)
    me = samples[0].sample.identity
    same_skin = dataclasses.replace(samples[1].sample, identity=dataclasses.replace(me, hair="navy" if me.hair != "navy"
                                                                                      else "pink"))
    pair = [samples[0], SimpleNamespace(sample=same_skin)]
    assert other_person(pair, 0) is pair[1]  # only the hair differs: still another person
    assert other_person(samples[:1], 0) is samples[0]  # nobody else: itself (its row then equals ``all``)


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
            assert cfg.model.autocast == "auto" and cfg.model.fsdp is False
            assert cfg.model.compile is (plan.compile and stage != "dmd")  # DMD's rollouts would recompile
    fp32 = pipeline.stage_config("sft", dataclasses.replace(pipeline.FULL, autocast="off"), layout, seed=0)
    assert config_from_dict(fp32).model.autocast == "off"
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

    results = json.loads((quick_run / "results_seed0.json").read_text())
    for key in ("teacher_vs_untrained", "student_vs_teacher", "switching", "long_stream", "plots", "timings_s",
                "machine", "command", "codec"):
        assert key in results, key
    switching = results["switching"]
    assert set(switching["summary"]) == {*pipeline.QUICK.switch_variants, "constant_frame", "codec_ceiling",
                                         "shuffled_garment"}
    assert len(switching["clips"]) == pipeline.QUICK.switch_samples
    described = results["switching_described"]
    assert set(described["summary"]) == {*pipeline.QUICK.described_variants, "constant_frame", "codec_ceiling",
                                         "shuffled_garment"}
    assert described["clips"] == switching["clips"]  # the same held-out clips, the other prompt
    # the other_person control's prompt, rebuilt from the captions, is the cached full prompt when the person is the
    # same (the cache's encoder and length), and another one otherwise
    samples = load_eval_samples(pipeline.Layout(quick_run), 3, prompt="full")
    for s in samples:
        assert torch.equal(other_person_prompt(s, s, pipeline.QUICK.model.text_len), s.text)
    other = other_person(samples, 0)
    assert not torch.equal(other_person_prompt(samples[0], other, pipeline.QUICK.model.text_len), samples[0].text)
    assert not torch.equal(load_eval_samples(pipeline.Layout(quick_run), 1)[0].text, samples[0].text)  # dynamic
    assert len(results["long_stream"]["series"]["garment_colour"]) == pipeline.QUICK.long_factor * 3
    for name in results["plots"]:
        with Image.open(quick_run / "plots" / "seed0" / name) as im:
            assert im.format == "PNG"
    layout = pipeline.Layout(quick_run)
    assert checkpoint_kind(layout.student) == "student"
    student = load_transformer(layout.student, dtype=torch.float32)
    assert student.config.dim == pipeline.QUICK.model.dim
    assert load_codec(layout.codec).config.z_dim == 48
    assert results["codec"]["gate"]["passed"]
    assert "## Targets" in (quick_run / "report.md").read_text()


def test_quick_run_switches_the_garment(quick_run):
    """The trained student shows the new garment after a switch, and only because of the garment image: the same
    stream given a shuffled garment image, and the switch without garment KV refresh, stay far below it."""
    summary = json.loads((quick_run / "results_seed0.json").read_text())["switching"]["summary"]
    switched = summary["all"]["colour_first_chunk"]["mean"]
    assert switched >= 0.4, summary["all"]
    assert summary["shuffled_garment"]["colour_first_chunk"]["mean"] < switched - 0.3
    assert summary["no_refresh"]["colour_first_chunk"]["mean"] < switched - 0.3
    assert summary["constant_frame"]["colour_first_chunk"]["mean"] == 0.0
    assert summary["all"]["colour_before"]["mean"] >= 0.35  # and the first garment before the switch
    # with the prompt describing the person (never the garment), the garment still comes from the garment image
    described = json.loads((quick_run / "results_seed0.json").read_text())["switching_described"]["summary"]
    assert described["shuffled_garment"]["colour_first_chunk"]["mean"] < described["all"]["colour_first_chunk"]["mean"] - 0.3
    assert described["no_refresh"]["colour_first_chunk"]["mean"] < described["all"]["colour_first_chunk"]["mean"] - 0.3


def test_quick_run_teacher_learns_on_held_out_combinations(quick_run):
    summary = json.loads((quick_run / "results_seed0.json").read_text())["teacher_vs_untrained"]["summary"]
    trained = summary["teacher_sft"]["heldout_flow_loss"]["mean"]
    untrained = summary["untrained"]["heldout_flow_loss"]["mean"]
    zero = summary["zero_velocity"]["heldout_flow_loss"]["mean"]
    assert trained < 0.6 * untrained, (trained, untrained)
    assert trained < zero, (trained, zero)


def test_a_codec_that_fails_the_gate_stops_the_run_before_training(tmp_path, capsys):
    from chameleon_core.training.world.__main__ import main
    from chameleon_core.vae import build_vae
    from chameleon_core.checkpoints import save_vae
    from chameleon_core.world.codec import CODEC_CONFIG

    bad = save_vae(tmp_path / "random_codec.safetensors", build_vae(CODEC_CONFIG, seed=0))
    out = tmp_path / "run"
    assert main(["--log-level", "WARNING", "run", "--out", str(out), "--quick", "--codec", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "cannot show a garment" in err and "garment colour accuracy" in err and str(bad) in err
    assert not (out / "cache").exists() and not (out / "runs").exists()


def test_export_writes_the_demo_files_the_loaders_read(quick_run, tmp_path):
    from chameleon_core.checkpoints import checkpoint_kind, load_transformer, load_vae
    from chameleon_core.text import load_prompt_embeddings
    from chameleon_core.tools.demo_models import FILES, IMAGES
    from chameleon_core.training.world.__main__ import main

    out = tmp_path / "demo"
    assert main(["--log-level", "WARNING", "export", "--run", str(quick_run), "--out", str(out)]) == 0
    student = out / "models" / FILES["student"]
    assert checkpoint_kind(student) == "student"
    model = load_transformer(student, dtype=torch.float32)
    from safetensors import safe_open

    with safe_open(str(student), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    vae = load_vae(out / "models" / FILES["vae"])
    assert vae.config.z_dim == 48 and vae.family.name == "wan2.2"
    context = load_prompt_embeddings(out / "models" / FILES["prompt"], text_dim=model.config.text_dim)
    assert context.shape[-1] == model.config.text_dim
    for name in IMAGES:
        with Image.open(out / "input" / name) as im:
            assert im.size == (64, 64)
    assert main(["--log-level", "WARNING", "export", "--run", str(tmp_path / "nothing"), "--out", str(out)]) == 2
