"""The public causal students as their projects publish them: files, LoRA pairs, profile detection, and streams
without reference / garment conditions (text- and image-to-video) through the core API and the command line."""

from __future__ import annotations

import pytest
import torch

from chameleon_core.checkpoints import CheckpointError, load_transformer, read_lora, save_transformer
from chameleon_core.config import PRESETS
from chameleon_core.profiles import (
    LONGLIVE_MERGED_FORMAT,
    PROFILE_METADATA_KEY,
    PROFILES,
    detect_profile,
    load_student,
    resolve_profile,
)
from chameleon_core.rescheduling import switch_garment, switch_prompt
from chameleon_core.session import GarmentSwitch, PromptSwitch, Session, TimedSwitch
from chameleon_core.stream_options import with_options
from chameleon_core.streaming import generate, start_stream
from chameleon_core.random_models import random_lora, random_transformer
from chameleon_core.checkpoints.layout_writers import write_generator_pt, write_lora_pt
from chameleon_core.tools import stream as cli

WAN21, WAN22 = PRESETS["tiny-wan2.1"], PRESETS["tiny"]


def weights_equal(model, reference: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(model.state_dict()[k], v.float()) for k, v in reference.items())


@pytest.fixture(scope="module")
def models():
    return {"a21": random_transformer(WAN21, seed=1), "b21": random_transformer(WAN21, seed=2),
            "a22": random_transformer(WAN22, seed=3)}


def test_self_forcing_file_loads_its_ema_with_its_profile(tmp_path, models):
    path = write_generator_pt(tmp_path / "self_forcing_dmd.pt", models["a21"], ema=models["b21"])
    model, prof, why = load_student(path, dtype=torch.float32)
    assert prof.name == "self_forcing" and "file name" in why
    assert weights_equal(model, models["b21"].state_dict())  # the project infers with --use_ema


def test_causvid_file_loads_its_generator(tmp_path, models):
    path = write_generator_pt(tmp_path / "causvid_autoregressive_model.pt", models["a21"], ema=models["b21"])
    model, prof, _ = load_student(path, dtype=torch.float32)
    assert prof.name == "causvid"
    assert weights_equal(model, models["a21"].state_dict())  # CausVid loads ['generator']


def test_a_file_that_does_not_say_falls_back_and_the_profile_can_be_chosen(tmp_path, models):
    path = write_generator_pt(tmp_path / "model.pt", models["a21"])
    assert detect_profile(path) == ("fashionchameleon", "the checkpoint does not say which student it is (the "
                                                        "pack's default)")
    _, prof, why = load_student(path, profile_name="causvid", dtype=torch.float32)
    assert (prof.name, why) == ("causvid", "chosen")


def test_longlive1_base_plus_lora_merges_w_plus_ba(tmp_path, models):
    base = write_generator_pt(tmp_path / "longlive_base.pt", models["a21"], ema=models["b21"])
    lora = random_lora(WAN21, rank=4, seed=7)
    lora_path = write_lora_pt(tmp_path / "longlive_lora.pt", lora)
    model, prof, _ = load_student(base, lora=lora_path, dtype=torch.float32)
    assert prof.name == "longlive1"  # 'longlive' in the name, Wan2.1 shapes
    sd, want = model.state_dict(), models["a21"].state_dict()
    q = "blocks.1.self_attn.q"
    a, b = lora[f"base_model.model.{q}.lora_A.weight"], lora[f"base_model.model.{q}.lora_B.weight"]
    torch.testing.assert_close(sd[q + ".weight"], want[q + ".weight"] + b @ a, rtol=0, atol=1e-6)
    touched = {k.removeprefix("base_model.model.").rsplit(".lora_", 1)[0] + ".weight" for k in lora}
    assert len(touched) == 2 * 10  # q, k, v, o of both attentions and the two FFN layers, in each of 2 blocks
    for name, value in want.items():  # everything else is the base generator ('generator', not the EMA)
        if name not in touched:
            assert torch.equal(sd[name], value), name


def test_longlive2_merged_file_is_recognised_by_its_entries(tmp_path, models):
    path = write_generator_pt(tmp_path / "model_bf16.pt", models["a22"], dtype=torch.bfloat16,
                              extras={"checkpoint_format": LONGLIVE_MERGED_FORMAT, "model_name": "Wan2.2-TI2V-5B",
                                      "merged_lora": True, "dtype": "bfloat16"})
    model, prof, why = load_student(path, dtype=torch.float32)
    assert prof.name == "longlive2" and "checkpoint_format" in why
    assert weights_equal(model, {k: v.to(torch.bfloat16) for k, v in models["a22"].state_dict().items()})


def test_longlive2_generator_and_rank128_style_lora_pair(tmp_path, models):
    base = write_generator_pt(tmp_path / "longlive2_generator.pt", models["a22"])
    lora_path = write_lora_pt(tmp_path / "longlive2_lora.pt", random_lora(WAN22, rank=8, seed=2), entry=False)
    model, prof, _ = load_student(base, lora=lora_path, dtype=torch.float32)
    assert prof.name == "longlive2" and read_lora(lora_path).rank == 8
    assert not weights_equal(model, models["a22"].state_dict())


def test_profile_metadata_wins_and_unknown_names_are_refused(tmp_path, models):
    path = save_transformer(tmp_path / "student.safetensors", models["a21"], kind="student",
                            metadata={PROFILE_METADATA_KEY: "longlive1"})
    assert detect_profile(path)[0] == "longlive1"
    bad = save_transformer(tmp_path / "bad.safetensors", models["a21"], kind="student",
                           metadata={PROFILE_METADATA_KEY: "sora"})
    with pytest.raises(ValueError, match="unknown stream profile 'sora'; choose one of"):
        detect_profile(bad)
    with pytest.raises(ValueError, match="unknown stream profile"):
        resolve_profile("nope", path)


def test_lora_errors_name_the_file_and_the_fix(tmp_path, models):
    base = write_generator_pt(tmp_path / "longlive_base.pt", models["a21"])
    other = dict(random_lora(WAN21, rank=4))
    other = {k.replace("blocks.1.", "blocks.7."): v for k, v in other.items()}
    with pytest.raises(CheckpointError, match="does not have.*belongs to another model"):
        load_transformer(base, lora=write_lora_pt(tmp_path / "far.pt", other))
    half = {k: v for k, v in random_lora(WAN21, rank=4).items() if "lora_B" not in k or "ffn.2" not in k}
    with pytest.raises(CheckpointError, match="has no lora_B; the file is incomplete"):
        read_lora(write_lora_pt(tmp_path / "half.pt", half))
    with pytest.raises(CheckpointError, match="holds no LoRA weights"):
        read_lora(write_generator_pt(tmp_path / "notalora.pt", models["a21"]))
    wide = {k: torch.cat([v, v], dim=1) if "lora_A" in k else v for k, v in random_lora(WAN21, rank=4).items()}
    with pytest.raises(CheckpointError, match="belongs to another model size"):
        load_transformer(base, lora=write_lora_pt(tmp_path / "wide.pt", wide))


# -- streams without conditions -------------------------------------------------------------------------------------


def t2v_state(model, name="longlive1", **kw):
    settings = PROFILES[name].settings_for(16)
    ctx = torch.randn(1, 5, model.config.text_dim, generator=torch.Generator().manual_seed(0))
    return start_stream(model, context=ctx, settings=settings, latent_size=(8, 8), **kw)


def test_condition_less_streams_refuse_garments_and_accept_prompts(models):
    state = t2v_state(models["a21"])
    state, _ = generate(state, 6)
    with pytest.raises(ValueError, match="this stream has no garment to switch"):
        switch_garment(state, torch.zeros(1, 16, 1, 8, 8))
    with pytest.raises(ValueError, match="has no garment: it streams a public"):
        Session(state, chunks=2, decode=False, timeline=[TimedSwitch(1, GarmentSwitch(torch.zeros(1, 8, 8, 3)))])
    with pytest.raises(ValueError, match="try-on, motion transfer and condition weighting act on the reference"):
        with_options(state, condition_weights=(-1.0, 0.0, 0.0, 0.0))
    new = switch_prompt(state, torch.randn(1, 5, 64))
    assert new.latent_frames == state.latent_frames == 6 and new.switches == 1
    chunks = Session(new, chunks=2, decode=False,
                     timeline=[TimedSwitch(1, PromptSwitch(torch.randn(1, 5, 64), label="second"))]).run()
    assert [c.switches[0].label for c in chunks if c.switches] == ["second"]


def test_condition_less_start_needs_a_size_and_refuses_conditions(models):
    model = models["a21"]
    ctx = torch.randn(1, 5, 64)
    settings = PROFILES["self_forcing"].settings_for(16)
    with pytest.raises(ValueError, match="a text-to-video stream needs its size: latent_size"):
        start_stream(model, context=ctx, settings=settings)
    lat = torch.zeros(1, 16, 1, 8, 8)
    with pytest.raises(ValueError, match="this stream has no reference or garment conditions"):
        start_stream(model, context=ctx, settings=settings, reference=lat, garment=lat)
    with pytest.raises(ValueError, match="takes reference and garment conditions"):
        start_stream(model, context=ctx, settings=PROFILES["fashionchameleon"].settings, first_frame=lat)


def test_image_to_video_holds_frame_zero(models):
    model = models["a22"]
    first = torch.randn(1, 48, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    state = t2v_state(model, "longlive2", first_frame=first)
    state, lat = generate(state, 16)
    assert torch.equal(lat[:, :, :1], first) and not torch.equal(lat[:, :, 1:2], lat[:, :, :1])


def test_new_shot_only_where_the_profile_has_shots(models):
    state, _ = generate(t2v_state(models["a21"]), 6)
    with pytest.raises(ValueError, match="new_shot needs a stream whose profile has shots"):
        switch_prompt(state, torch.randn(1, 5, 64), new_shot=True)
    ll2, _ = generate(t2v_state(models["a22"], "longlive2"), 8)
    shot = switch_prompt(ll2, torch.randn(1, 5, 64), new_shot=True)
    assert (shot.shot, shot.pin_next, shot.rope_offset) == (1, True, 8)
    after, _ = generate(shot, 8)
    assert after.cache.pinned and not after.pin_next


# -- the command line --------------------------------------------------------------------------------------------------


def _cli(tmp_path, *args):
    return cli.main(["--random", *args, "--width", "64", "--height", "64", "--out", str(tmp_path / "out"),
                     "--json", str(tmp_path / "s.json")])


def test_cli_streams_a_profile_and_refuses_inputs_it_does_not_take(tmp_path, capsys):
    assert _cli(tmp_path, "tiny-wan2.1", "--profile", "longlive1", "--frames", "45") == 0
    import json

    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["profile"] == "longlive1" and summary["video_frames"] == 45
    img = tmp_path / "p.png"
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 10, 10)).save(img)
    assert _cli(tmp_path, "tiny-wan2.1", "--profile", "causvid", "--reference", str(img), "--garment", str(img)) == 2
    assert "streams text-to-video without a person or garment: drop --reference, --garment" in capsys.readouterr().err
    assert _cli(tmp_path, "tiny-wan2.1", "--profile", "self_forcing", "--image", str(img)) == 2
    assert "text-to-video only: drop --image" in capsys.readouterr().err
    assert _cli(tmp_path, "tiny", "--profile", "fashionchameleon") == 2
    assert "give --reference and --garment" in capsys.readouterr().err


def test_cli_image_to_video_and_shot_switch(tmp_path):
    from PIL import Image
    from safetensors.torch import save_file

    img = tmp_path / "first.png"
    Image.new("RGB", (64, 64), (10, 200, 10)).save(img)
    shot = tmp_path / "shot.safetensors"
    save_file({"context": torch.randn(1, 5, 64)}, str(shot))
    code = _cli(tmp_path, "tiny", "--profile", "longlive2", "--image", str(img), "--frames", "65",
                "--shot-switch", f"33:{shot}")
    assert code == 0
    import json

    summary = json.loads((tmp_path / "s.json").read_text())
    assert [s["kind"] for s in summary["switches"]] == ["prompt"] and summary["video_frames"] == 93
