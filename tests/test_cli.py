"""The command line ``python -m chameleon_core`` (chameleon_core/tools/stream.py), run in-process on tiny weight files.

Frame arithmetic used below, derived by hand from the Wan VAE (latent frame 0 is video frame 0; latent frame j >= 1
is video frames 4j-3 .. 4j): with chunks of 3 latent frames, chunk 0 is video frames 0-8, chunk 1 is 9-20, chunk 2
is 21-32. So ``--frames 33`` is 9 latent frames = 3 chunks, and a switch asked for at frame 12 lands at frame 21.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from chameleon_core.tools import stream as cli
from chameleon_core import frames
from chameleon_core.latents import WAN22
from tests.tiny_models import tiny_transformer
from chameleon_core.checkpoints.layout_writers import write_transformer_checkpoint
from chameleon_core.text import save_prompt_embeddings
from chameleon_core.tools.tiny_checkpoints import write_images, write_vae

SIZE = 64
FRAMES = 33  # 9 latent frames, 3 chunks
SWITCHED_FRAMES = 29  # the same 3 chunks with a garment switch: it starts a new clip, whose first latent is not shown
SWITCH_ASKED, SWITCH_LANDED = 12, 21


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine their spin-waits make each run
    tens of times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Tiny weight files in the real layouts: a student (Wan names), a Wan2.2 VAE, prompt embeddings, images."""
    d = tmp_path_factory.mktemp("cli_files")
    write_images(d, size=SIZE)
    gen = torch.Generator().manual_seed(0)
    text_dim = tiny_transformer().config.text_dim  # 64, the tiny preset's
    out = {
        "student": write_transformer_checkpoint(tiny_transformer(seed=0), d / "tiny_student.safetensors"),
        "vae": d / "wan2.2_vae.safetensors",
        "prompt": save_prompt_embeddings(d / "prompt.safetensors", torch.randn(8, text_dim, generator=gen), "walks"),
        "prompt2": save_prompt_embeddings(d / "prompt2.safetensors", torch.randn(6, text_dim, generator=gen), "turns"),
        "wide": save_prompt_embeddings(d / "wide.safetensors", torch.randn(8, 2 * text_dim, generator=gen), "wide"),
        "teacher": write_transformer_checkpoint(tiny_transformer(seed=1), d / "tiny_teacher.safetensors",
                                                metadata={"fashionchameleon.kind": "teacher"}),
    }
    write_vae(out["vae"], seed=0)
    for name in ("reference", "garment1", "garment2", "garment3"):
        out[name] = d / f"{name}.png"
    out["dir"] = d
    return out


def weight_args(files: dict[str, Path], **extra: str) -> list[str]:
    args = {"--student": files["student"], "--vae": files["vae"], "--prompt-embeds": files["prompt"],
            "--reference": files["reference"], "--garment": files["garment1"], "--width": SIZE, "--height": SIZE,
            "--frames": FRAMES, "--seed": 3, **extra}
    return [str(x) for kv in args.items() for x in kv]


def read_frames(folder: Path) -> np.ndarray:
    names = sorted(folder.glob("frame_*.png"))
    assert [p.name for p in names] == [f"frame_{i:05d}.png" for i in range(len(names))]
    return np.stack([np.asarray(Image.open(p)) for p in names])


@pytest.fixture(scope="module")
def runs(files, tmp_path_factory) -> dict[str, tuple[np.ndarray, dict]]:
    """The same stream (same seed) with and without a garment switch at frame 12: frames and JSON summaries."""
    out = {}
    for name, extra in (("plain", {}), ("switched", {"--switch": f"{SWITCH_ASKED}:{files['garment2']}",
                                                      "--frames": SWITCHED_FRAMES})):
        d = tmp_path_factory.mktemp(name)
        code = cli.main(weight_args(files, **{"--out": d / "frames", "--json": d / "summary.json", **extra}))
        assert code == 0
        out[name] = (read_frames(d / "frames"), json.loads((d / "summary.json").read_text()))
    return out


# --- end to end on weight files ------------------------------------------------------------------------------------


def test_frames_folder_holds_every_video_frame(runs):
    frames, summary = runs["switched"]
    t_lat = summary["latent_frames"]
    assert t_lat == 9
    assert frames.shape == (4 * (t_lat - 1) + 1 - 4, SIZE, SIZE, 3) == (SWITCHED_FRAMES, SIZE, SIZE, 3)
    assert runs["plain"][0].shape == (FRAMES, SIZE, SIZE, 3)
    assert frames.dtype == np.uint8
    assert frames.std() > 0  # not a constant image


def test_switch_lands_on_chunk_boundary_and_changes_only_what_follows(runs):
    plain, _ = runs["plain"]
    switched, summary = runs["switched"]
    (switch,) = summary["switches"]
    assert (switch["kind"], switch["requested_frame"], switch["frame"]) == ("garment", SWITCH_ASKED, SWITCH_LANDED)
    # Before the boundary: bit-identical (same seed, causal decode). From it on: the new garment's video.
    np.testing.assert_array_equal(switched[:SWITCH_LANDED], plain[:SWITCH_LANDED])
    n = SWITCHED_FRAMES - SWITCH_LANDED
    changed = (switched[SWITCH_LANDED:] != plain[SWITCH_LANDED:SWITCHED_FRAMES]).reshape(n, -1).mean(1)
    assert (changed > 0.1).all(), f"share of pixels changed per frame after the switch: {changed}"


def test_json_summary_reports_positive_fps_and_end_to_end_below_backbone(runs):
    for name, (_, summary) in runs.items():
        frames = FRAMES if name == "plain" else SWITCHED_FRAMES
        assert summary["video_frames"] == frames and summary["chunks"] == 3
        assert summary["backbone_fps"] > 0 and summary["end_to_end_fps"] > 0
        assert summary["end_to_end_fps"] <= summary["backbone_fps"]
        seconds = summary["backbone_seconds"] + summary["decode_seconds"] + summary["switch_seconds"]
        assert summary["end_to_end_fps"] == pytest.approx(frames / seconds)
        assert len(summary["chunk_seconds"]) == len(summary["decode_chunk_seconds"]) == 3
    assert runs["switched"][1]["switches"][0]["seconds"] > 0


def test_prompt_switch_and_ablations_run(files, tmp_path, capsys):
    out = tmp_path / "frames"
    code = cli.main(weight_args(files, **{"--out": out, "--json": tmp_path / "s.json"}) + [
        "--switch", f"21:{files['garment3']}", "--prompt-switch", f"9:{files['prompt2']}",
        "--no-disentangle", "--keep-sink",
    ])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert [(s["kind"], s["frame"]) for s in summary["switches"]] == [("prompt", 9), ("garment", 21)]
    assert len(list(out.glob("frame_*.png"))) == FRAMES


@pytest.mark.parametrize(
    "asked, landed",
    [(1, 9), (8, 9), (9, 9), (10, 21), (12, 21), (21, 21), (22, 33), (33, 33)],
)
def test_switch_frame_rounds_up_to_the_next_chunk_boundary(asked, landed):
    chunk = frames.landing_chunk(asked, 3, stride=WAN22.temporal_stride)
    assert frames.chunk_first_video_frame(chunk, 3, stride=WAN22.temporal_stride) == landed


def test_later_switches_land_where_the_stream_shows_them_after_a_new_clip(files, tmp_path, capsys):
    """Two garment switches: each starts a new clip, whose first latent frame is not shown, so the second boundary
    sits at frame 41 (not 45) and the video at 61 frames; --frames asks for at least that many frames shown."""
    out = tmp_path / "frames"
    code = cli.main(weight_args(files, **{"--out": out, "--json": tmp_path / "s.json", "--frames": 61}) + [
        "--switch", f"21:{files['garment2']}", "--switch", f"38:{files['garment3']}"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert [(s["requested_frame"], s["frame"]) for s in summary["switches"]] == [(21, 21), (38, 41)]
    assert summary["chunks"] == 6 and summary["video_frames"] == 61 == len(list(out.glob("frame_*.png")))
    # with the sink kept no new clip starts: the boundaries and the length are the continuous video's
    code = cli.main(weight_args(files, **{"--out": tmp_path / "kept", "--json": tmp_path / "k.json", "--frames": 61})
                    + ["--switch", f"21:{files['garment2']}", "--switch", f"38:{files['garment3']}", "--keep-sink"])
    assert code == 0, capsys.readouterr().err
    kept = json.loads((tmp_path / "k.json").read_text())
    assert [s["frame"] for s in kept["switches"]] == [21, 45] and kept["video_frames"] == 69


# --- missing weights and bad input ---------------------------------------------------------------------------------


def test_missing_weights_list_what_to_get_and_where(files, capsys):
    code = cli.main(["--reference", str(files["reference"]), "--garment", str(files["garment1"]),
                     "--vae", str(files["dir"] / "nowhere" / "wan2.2_vae.safetensors")])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and "http" not in err
    assert err.startswith("error: missing weight files")
    err = " ".join(err.split())  # the list is wrapped for a terminal
    for needed in ("--student (not given)", "not public yet", "Self-Forcing", "CausVid", "LongLive 2.0",
                   "Wan2.2-TI2V-5B", "models/diffusion_models/",
                   "--vae (not found:", "nowhere", "Wan2.2_VAE.pth", "wan2.2_vae.safetensors",
                   "Comfy-Org/Wan_2.2_ComfyUI_Repackaged", "split_files/vae/", "models/vae/",
                   "--prompt-embeds", "python -m chameleon_core.tools.prompt_embeds", "--text-encoder", "google/umt5-xxl"):
        assert needed in err, needed
    assert "--reference" not in err  # the images are there


def test_missing_text_encoder_folder_is_named(files, tmp_path, capsys):
    code = cli.main([
        "--student", str(files["student"]), "--vae", str(files["vae"]), "--reference", str(files["reference"]),
        "--garment", str(files["garment1"]), "--prompt", "a person", "--text-encoder", str(tmp_path / "umt5-xxl"),
    ])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "--text-encoder (not found:" in err and "umt5-xxl" in err
    assert "--student" not in err and "Traceback" not in err


RANDOM = ["--random", "tiny", "--width", str(SIZE), "--height", str(SIZE), "--frames", "9"]


@pytest.mark.parametrize(
    "change, expected",
    [
        (["--width", "70"], ["70x64", "multiple of 32"]),
        (["--frames", "5"], ["--frames 5", "less than one chunk", "--frames 9"]),
        (["--prompt-embeds", "{wide}"], ["128 features per token", "text_dim=64"]),
        (["--switch", "abc"], ["--switch 'abc'", "FRAME:IMAGE"]),
        (["--switch", "0:{garment2}"], ["FRAME must be >= 1"]),
        (["--frames", "33", "--switch", "30:{garment2}"], ["frame 30 rounds up", "frame 33", "--frames 34"]),
        # a switch that starts a new clip needs one more chunk here, past the length limit
        (["--frames", "9999993", "--switch", "21:{garment2}"], ["10000001 video frames", "--frames 9999989"]),
        (["--chunk-frames", "3", "--cache-frames", "6"], ["cache_frames=6"]),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(files, tmp_path, capsys, change, expected):
    change = [c.format(**files) for c in change]
    args = RANDOM + ["--reference", str(files["reference"]), "--garment", str(files["garment1"]),
                     "--out", str(tmp_path / "out")] + change
    code = cli.main(args)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one line, no traceback
    for text in expected:
        assert text in err, (text, err)
    assert not (tmp_path / "out").exists()  # nothing was generated


def test_wrong_vae_family_is_refused_before_the_transformer_loads(files, tmp_path, capsys):
    from safetensors.torch import save_file

    from chameleon_core.vae import build_vae

    wan21 = tmp_path / "wan_2.1_vae.safetensors"
    save_file({k: v.contiguous() for k, v in build_vae("wan2.1-tiny").model.state_dict().items()}, str(wan21))
    code = cli.main(weight_args(files, **{"--vae": wan21, "--out": tmp_path / "o"}))
    err = capsys.readouterr().err
    assert code == 2 and "48-channel" in err and "16-channel" in err and "wan2.2_vae.safetensors" in err


def test_teacher_checkpoint_is_warned_about(files, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="chameleon_core.cli"):
        code = cli.main(weight_args(files, **{"--student": files["teacher"], "--width": 70, "--out": tmp_path}))
    assert code == 2  # the odd width stops it before any weights load
    assert any("bidirectional teacher" in r.getMessage() for r in caplog.records)


def test_frames_folder_of_an_earlier_run_is_not_mixed_into(files, tmp_path, capsys):
    (tmp_path / "frame_00000.png").write_bytes(b"")
    code = cli.main(RANDOM + ["--reference", str(files["reference"]), "--garment", str(files["garment1"]),
                              "--out", str(tmp_path)])
    assert code == 2 and "already holds 1 frame_*.png" in capsys.readouterr().err


# --- outputs and the random smoke run ------------------------------------------------------------------------------


def test_random_tiny_smoke_run_needs_only_images(files, tmp_path, capsys):
    out = tmp_path / "frames"
    code = cli.main(RANDOM + ["--reference", str(files["reference"]), "--garment", str(files["garment1"]),
                              "--out", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0
    assert read_frames(out).shape == (9, SIZE, SIZE, 3)
    for line in ("tiny (random weights)", "video frames    9", "backbone", "end to end", "FPS", "peak memory",
                 str(out)):
        assert line in stdout, line


def test_prompt_encoded_by_a_local_umt5_folder(files, tmp_path_factory, tmp_path, capsys):
    """--prompt with --text-encoder: a tiny random HF-format umT5 (width 64 = the tiny preset's text_dim)."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    folder = tmp_path_factory.mktemp("umt5")
    words = "a woman in red dress walks".split()
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.post_processor = tokenizers.processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                         unk_token="<unk>").save_pretrained(folder)
    config = transformers.UMT5Config(vocab_size=16, d_model=64, d_kv=8, num_heads=2, d_ff=32, num_layers=1,
                                     relative_attention_num_buckets=8, dropout_rate=0.0, pad_token_id=0,
                                     eos_token_id=1, decoder_start_token_id=0)
    transformers.UMT5EncoderModel(config).eval().save_pretrained(folder)
    code = cli.main(RANDOM + ["--reference", str(files["reference"]), "--garment", str(files["garment1"]),
                              "--prompt", "a woman in a red dress walks", "--text-encoder", str(folder),
                              "--out", str(tmp_path / "frames")])
    assert code == 0, capsys.readouterr().err
    assert len(list((tmp_path / "frames").glob("frame_*.png"))) == 9


def test_mp4_output(files, tmp_path):
    av = pytest.importorskip("av")
    video = tmp_path / "clip.mp4"
    code = cli.main(RANDOM + ["--reference", str(files["reference"]), "--garment", str(files["garment1"]),
                              "--out", str(video), "--fps", "12"])
    assert code == 0
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        rate = stream.average_rate
    assert len(frames) == 9 and frames[0].shape == (SIZE, SIZE, 3)
    assert rate == 12


# --- issue 13: numbers, sizes and inputs checked before models load; NaN output is an error ---------------------------


@pytest.mark.parametrize(
    "change, expected",
    [
        (["--fps", "nan"], ["--fps must be a finite frame rate", "nan", "--fps 24"]),
        (["--fps", "inf"], ["--fps must be a finite frame rate", "inf"]),
        (["--seed", str(2**64)], ["--seed 18446744073709551616 is out of range", "0..9223372036854775807"]),
        (["--seed", "-1"], ["--seed -1 is out of range"]),
        (["--cache-frames", "1000000"], ["cache_frames must be a whole number in 1..1024", "1000000"]),
        (["--width", "70400", "--height", "128"], ["--width 70400", "at most 8192 pixels"]),
    ],
)
def test_bad_numbers_fail_before_models_load(files, tmp_path, capsys, monkeypatch, change, expected):
    from chameleon_core.tools import stream as stream_tool

    def never(*a, **k):
        raise AssertionError("a model loaded before the arguments were checked")

    monkeypatch.setattr(stream_tool, "random_transformer", never)
    monkeypatch.setattr(stream_tool, "build_vae", never)
    args = RANDOM + ["--reference", str(files["reference"]), "--garment", str(files["garment1"]),
                     "--out", str(tmp_path / "out")] + change
    code = cli.main(args)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    for text in expected:
        assert text in err, (text, err)
    assert not (tmp_path / "out").exists()


def test_memory_plan_refuses_before_loading(files, tmp_path, capsys, monkeypatch):
    from chameleon_core import memory

    monkeypatch.setattr(memory, "host_available", lambda: 2**20)  # 1 MiB free
    code = cli.main(RANDOM + ["--reference", str(files["reference"]), "--garment", str(files["garment1"]),
                              "--out", str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "would need about" in err and "GiB is free" in err and "--cache-frames" in err, err
    assert not (tmp_path / "out").exists()


def test_nan_image_and_prompt_inputs_are_named_before_any_frame(files, tmp_path, capsys):
    from PIL import Image

    arr = np.full((16, 16), np.nan, dtype=np.float32)
    Image.fromarray(arr, mode="F").save(tmp_path / "nan.tiff")
    out = tmp_path / "out"
    code = cli.main(RANDOM + ["--reference", str(tmp_path / "nan.tiff"), "--garment", str(files["garment1"]),
                              "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "nan.tiff holds NaN" in err, err
    bad = torch.randn(3, 64)
    bad[0, 0] = float("inf")
    save_prompt_embeddings(tmp_path / "bad.safetensors", bad, "x")
    code = cli.main(RANDOM + ["--reference", str(files["reference"]), "--garment", str(files["garment1"]),
                              "--frames", "33", "--prompt-switch", f"20:{tmp_path / 'bad.safetensors'}",
                              "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "bad.safetensors" in err and "NaN/inf" in err, err
    assert not out.exists() or not any(out.iterdir())  # no frame written before the failure


def test_nan_vae_output_exits_1_naming_the_vae(files, tmp_path, capsys, monkeypatch):
    from chameleon_core.tools import stream as stream_tool

    real = stream_tool.build_vae

    def broken_vae(*a, **k):
        vae = real(*a, **k)
        with torch.no_grad():
            vae.model.decoder.head[2].weight.fill_(float("nan"))
        vae.source = "models/vae/broken_vae.safetensors"
        return vae

    monkeypatch.setattr(stream_tool, "build_vae", broken_vae)
    code = cli.main(RANDOM + ["--reference", str(files["reference"]), "--garment", str(files["garment1"]),
                              "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and "decoded frames" in err and "broken_vae.safetensors" in err, err


def test_real_time_options_stream_and_keep_frame_counts(files, tmp_path, capsys):
    """--decoder (the tiny streaming decoder), --overlap-decode, --device-noise and --skip-clean-pass run through
    the same session loop and write every frame; the exact path's frames are unchanged by --overlap-decode."""
    exact = tmp_path / "exact"
    assert cli.main(weight_args(files, **{"--out": exact})) == 0
    overlapped = tmp_path / "overlapped"
    assert cli.main(weight_args(files, **{"--out": overlapped}) + ["--overlap-decode"]) == 0
    np.testing.assert_array_equal(read_frames(overlapped), read_frames(exact))
    fast = tmp_path / "fast"
    code = cli.main(["--random", "tiny", "--reference", str(files["reference"]), "--garment", str(files["garment1"]),
                     "--width", str(SIZE), "--height", str(SIZE), "--frames", str(SWITCHED_FRAMES), "--decoder", "random",
                     "--device-noise", "--skip-clean-pass", "--switch", f"{SWITCH_ASKED}:{files['garment2']}",
                     "--out", str(fast)])
    assert code == 0, capsys.readouterr().err
    assert read_frames(fast).shape == (SWITCHED_FRAMES, SIZE, SIZE, 3)


def test_decoder_file_problems_are_reported_before_loading(files, tmp_path, capsys):
    code = cli.main(weight_args(files, **{"--out": tmp_path / "o"}) + ["--decoder", str(tmp_path / "taew2_2.pth")])
    err = capsys.readouterr().err
    assert code == 2 and "--decoder" in err and "taew2_2.pth" in err
    code = cli.main(weight_args(files, **{"--out": tmp_path / "o"}) + ["--decoder", "random"])
    assert code == 2 and "--random" in capsys.readouterr().err
