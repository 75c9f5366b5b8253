"""``python -m chameleon_core.eval hgc``: the weight-free video metrics on constructed videos with known answers, the
meta_data.csv reader on HGC-Bench's column layout, the model-based metrics with tiny random transformers models, and
the messages for missing model files."""

from __future__ import annotations

import csv
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

cv2 = pytest.importorskip("cv2", reason="the flow metrics need opencv-python-headless (requirements-test.txt)")

from chameleon_core.eval import cli, feature_models, flow, hgc, videos

# --- constructed videos ---------------------------------------------------------------------------------------------


def texture(size: int = 320, seed: int = 0) -> np.ndarray:
    """A smooth random grey texture ``[size, size]`` uint8 (Farneback needs texture, and smooth enough to follow)."""
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 3)
    return (255 * (t - t.min()) / (t.max() - t.min())).astype(np.uint8)


def translating(frames: int, dx: int, dy: int, h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A window moving over a texture so the content moves ``(dx, dy)`` pixels per frame: ``[F, H, W, 3]``."""
    t = texture(seed=seed)
    x0, y0 = 100, 100
    out = [t[y0 - dy * i: y0 - dy * i + h, x0 - dx * i: x0 - dx * i + w] for i in range(frames)]
    return np.repeat(np.stack(out)[..., None], 3, -1)


def test_frozen_video_has_no_motion_no_warping_error_and_full_smoothness():
    frames = np.repeat(translating(1, 0, 0), 6, axis=0)
    s = flow.video_motion(frames).summary(diagonal=160.0)
    assert s["motion_px"] == 0.0 and s["motion_top_px"] == 0.0
    assert s["warp_error"] == 0.0 and s["occluded"] == 0.0
    assert s["smoothness"] == pytest.approx(1.0, abs=1e-6)


def test_translating_pattern_gives_its_flow():
    dx, dy = 3, -2
    frames = translating(6, dx, dy)
    f = flow.optical_flow(frames[0], frames[1])
    inner = f[16:-16, 16:-16].reshape(-1, 2)
    assert np.median(inner, axis=0) == pytest.approx([dx, dy], abs=0.1)
    s = flow.video_motion(frames).summary(diagonal=160.0)
    # The frame's border (content entering) is less exact; the mean over the whole frame is within 10%.
    assert s["motion_px"] == pytest.approx(math.hypot(dx, dy), rel=0.1)
    assert s["motion_pct_diagonal"] == pytest.approx(100 * s["motion_px"] / 160.0)
    assert s["warp_error"] < 0.005  # the pattern warps back onto itself
    assert s["smoothness"] > 0.99


def test_warp_follows_the_flow_convention():
    frames = translating(2, 4, 0)
    a, b = frames[0].astype(np.float32), frames[1]
    exact = np.zeros((*a.shape[:2], 2), np.float32)
    exact[..., 0] = 4.0  # a[y, x] == b[y, x + 4]
    assert np.abs(flow.warp(b, exact)[:, :-8] - a[:, :-8]).max() == 0.0


def test_hard_cut_shows_up_in_smoothness_and_warping_error():
    cut = 5
    smooth = translating(10, 2, 1)
    other = translating(10, 2, 1, seed=7)
    with_cut = np.concatenate([smooth[:cut], other[cut:]])
    s_ok = flow.video_motion(smooth).summary(diagonal=160.0)
    s_cut = flow.video_motion(with_cut).summary(diagonal=160.0)
    assert s_cut["warp_error_max_pair"] == cut - 1  # the pair (cut - 1, cut)
    assert s_cut["warp_error_max"] > 10 * s_ok["warp_error_max"]
    assert s_cut["smoothness_min_frame"] in (cut - 1, cut)  # the two frames whose neighbours straddle the cut
    assert 1 - s_cut["smoothness_min"] > 10 * (1 - s_ok["smoothness_min"])
    assert s_cut["smoothness"] < s_ok["smoothness"]
    series = flow.video_motion(with_cut).series()
    assert len(series["warp_error"]) == 9 and len(series["smoothness"]) == 8
    assert int(np.argmax(series["warp_error"])) == cut - 1


def test_sharpness_falls_with_blur():
    frames = translating(2, 0, 0)
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 2) for f in frames])
    assert flow.sharpness(blurred) < 0.5 * flow.sharpness(frames)


# --- reading videos -------------------------------------------------------------------------------------------------


def write_frames(folder: Path, frames: np.ndarray) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"frame_{i:05d}.png")
    return folder


def test_read_video_from_frames_and_mp4(tmp_path):
    from chameleon_core.tools.video_files import Mp4File

    frames = translating(5, 1, 0, h=64, w=64)
    assert np.array_equal(videos.read_video(write_frames(tmp_path / "f", frames)), frames)
    mp4 = Mp4File(tmp_path / "v.mp4", 24, 64, 64)
    mp4.write(frames)
    mp4.close()
    back = videos.read_video(tmp_path / "v.mp4")
    assert back.shape == frames.shape
    assert np.abs(back.astype(float) - frames).mean() < 6  # lossy H.264 / MPEG-4
    assert len(videos.read_video(tmp_path / "v.mp4", max_frames=3)) == 3


def test_read_video_errors_name_the_file(tmp_path):
    with pytest.raises(videos.VideoFileError, match="video not found: .*nope.mp4"):
        videos.read_video(tmp_path / "nope.mp4")
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(videos.VideoFileError, match="bad.mp4"):
        videos.read_video(tmp_path / "bad.mp4")
    write_frames(tmp_path / "one", translating(1, 0, 0))
    with pytest.raises(videos.VideoFileError, match="at least 2"):
        videos.read_video(tmp_path / "one")
    from PIL import Image

    mixed = write_frames(tmp_path / "mixed", translating(2, 0, 0))
    Image.fromarray(translating(1, 0, 0, h=50)[0]).save(mixed / "frame_00002.png")
    with pytest.raises(videos.VideoFileError, match="differ in size"):
        videos.read_video(mixed)


# --- HGC-Bench's meta_data.csv --------------------------------------------------------------------------------------


def write_bench(root: Path, rows: int = 2) -> Path:
    """A benchmark folder in HGC-Bench's layout: meta_data.csv (prompt JSON, src_image, cloth_image) + images."""
    from PIL import Image

    (root / "samples").mkdir(parents=True)
    rng = np.random.default_rng(1)
    with open(root / "meta_data.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "src_image", "cloth_image"])
        for i in range(rows):
            Image.fromarray(rng.integers(0, 255, (80, 60, 3), np.uint8)).save(root / "samples" / f"{i:04d}_src.png")
            Image.fromarray(rng.integers(0, 255, (50, 40, 3), np.uint8)).save(root / "samples" / f"{i:04d}_cloth.png")
            prompt = {"caption": {"en_short": [f"A woman walks {i}.", "Indoor; a red dress."],
                                  "cn_short": ["一位女性走路。", "室内。"]}}
            w.writerow([json.dumps(prompt, ensure_ascii=False), f"samples/{i:04d}_src.png",
                        f"samples/{i:04d}_cloth.png"])
    return root / "meta_data.csv"


def test_read_meta_in_the_benchmark_layout(tmp_path):
    meta = write_bench(tmp_path / "HGC-Bench")
    samples = hgc.read_meta(meta, tmp_path / "out")
    assert [s.index for s in samples] == [0, 1]
    assert samples[1].prompt == "A woman walks 1. Indoor; a red dress."
    assert samples[1].reference == tmp_path / "HGC-Bench" / "samples" / "0001_src.png"
    assert samples[1].garment.is_file()
    assert samples[1].video == tmp_path / "out" / "output_1.mp4"  # the authors' naming
    by_stem = hgc.read_meta(meta, tmp_path / "out", video_pattern="{stem}/")
    assert by_stem[0].video == tmp_path / "out" / "0000_src"


def test_image_paths_written_for_another_working_directory_are_found(tmp_path):
    meta = write_bench(tmp_path / "HGC-Bench", rows=1)
    found = hgc.resolve_image("./HGC-Bench/samples/0000_src.png", meta.parent)  # as run from the authors' repo root
    assert found == tmp_path / "HGC-Bench" / "samples" / "0000_src.png"
    assert hgc.resolve_image("samples/none.png", meta.parent) == meta.parent / "samples" / "none.png"


def test_model_path_of_the_wrong_kind_is_named(tmp_path):
    (tmp_path / "clip.bin").write_bytes(b"x")
    with pytest.raises(feature_models.MissingModelFile, match=r"--clip: .*clip.bin is a file; it should be a CLIP "):
        hgc.model_paths({"clip": tmp_path / "clip.bin"}, None)


def test_read_meta_errors_say_what_to_fix(tmp_path):
    meta = write_bench(tmp_path / "b")
    with pytest.raises(hgc.BenchError, match=r"no column 'reference'.*\['prompt', 'src_image', 'cloth_image'\]"
                                             r".*--reference-column"):
        hgc.read_meta(meta, tmp_path, columns=hgc.MetaColumns(reference="reference"))
    with pytest.raises(hgc.BenchError, match="--video-pattern"):
        hgc.read_meta(meta, tmp_path, video_pattern="{row}.mp4")
    with pytest.raises(hgc.BenchError, match="meta_data.csv"):
        hgc.read_meta(tmp_path / "missing.csv", tmp_path)


def test_prompt_text_variants():
    assert hgc.prompt_text('{"caption": {"en_short": "a b"}}') == "a b"
    assert hgc.prompt_text('{"en_short": ["a", "b"]}') == "a b"
    assert hgc.prompt_text("plain words") == "plain words"


# --- the command, weight-free ---------------------------------------------------------------------------------------


def test_hgc_command_without_models(tmp_path, caplog):
    meta = write_bench(tmp_path / "bench", rows=3)
    out_dir = tmp_path / "gen"
    write_frames(out_dir / "output_0.mp4", np.repeat(translating(1, 0, 0), 4, axis=0))  # a frame folder, mp4-named
    write_frames(out_dir / "output_1.mp4", translating(4, 2, 0))
    caplog.set_level("INFO")
    rc = cli.main(["hgc", "--meta", str(meta), "--videos", str(out_dir), "--out", str(tmp_path / "r.json")])
    assert rc == 0
    r = json.loads((tmp_path / "r.json").read_text())
    frozen, moving = r["per_video"]
    assert frozen["motion_px"] == 0.0 and frozen["warp_error"] == 0.0
    assert moving["motion_px"] == pytest.approx(2.0, rel=0.15)
    assert r["mean"]["motion_px"]["n"] == 2
    assert r["mean"]["motion_px"]["mean"] == pytest.approx((frozen["motion_px"] + moving["motion_px"]) / 2)
    assert moving["series"]["motion_px"] == pytest.approx([moving["motion_px"]] * 3, rel=0.15)
    assert r["missing_videos"] == [str(out_dir / "output_2.mp4")]
    assert frozen["garment_clip"] is None and "garment_clip" not in r["mean"]
    # One message per model not given, naming its option and where to get it.
    assert len(r["skipped_models"]) == len(feature_models.MODEL_SOURCES)
    for src, message in zip(feature_models.MODEL_SOURCES.values(), r["skipped_models"], strict=True):
        assert src.flag in message and src.where in message
    assert "motion_px" in caplog.text and "smoothness" in caplog.text  # the table


def test_explicit_missing_model_is_an_error_naming_it(tmp_path, capsys):
    meta = write_bench(tmp_path / "bench", rows=1)
    write_frames(tmp_path / "gen" / "output_0.mp4", translating(3, 1, 0))
    rc = cli.main(["hgc", "--meta", str(meta), "--videos", str(tmp_path / "gen"), "--out", str(tmp_path / "r.json"),
                   "--clip", str(tmp_path / "no-clip"), "--face", str(tmp_path / "no.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "--clip" in err and "no-clip" in err and "openai/clip-vit-large-patch14" in err
    assert "--face" in err and "no.onnx" in err and "insightface" in err
    assert not (tmp_path / "r.json").exists()


def test_models_dir_skips_each_missing_file_once(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "arcface.onnx").write_bytes(b"x")
    paths, skipped = hgc.model_paths({}, tmp_path / "models")
    assert paths == {"face": tmp_path / "models" / "arcface.onnx"}
    assert len(skipped) == 4
    assert any("face_detection_yunet_2023mar.onnx" in m and "opencv_zoo" in m for m in skipped)
    scorers = hgc.load_scorers({"face": paths["face"]}, skipped)  # the recogniser alone is not enough
    assert scorers.face is None and "YuNet detector are needed" in scorers.skipped[-1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_device_without_cuda_is_an_error(tmp_path, capsys):
    meta = write_bench(tmp_path / "bench", rows=1)
    write_frames(tmp_path / "gen" / "output_0.mp4", translating(3, 1, 0))
    rc = cli.main(["hgc", "--meta", str(meta), "--videos", str(tmp_path / "gen"), "--out", str(tmp_path / "r.json"),
                   "--device", "cuda"])
    assert rc == 2 and "no CUDA device is available here; use --device cpu" in capsys.readouterr().err


def test_no_video_found_is_an_error(tmp_path, capsys):
    meta = write_bench(tmp_path / "bench", rows=2)
    (tmp_path / "gen").mkdir()
    assert cli.main(["hgc", "--meta", str(meta), "--videos", str(tmp_path / "gen"), "--out", str(tmp_path / "r.json")]) == 2
    assert "none of the 2 videos" in capsys.readouterr().err


# --- the subcommand registry ----------------------------------------------------------------------------------------


def test_cli_dispatches_world_to_its_module(monkeypatch):
    seen = {}
    fake = types.ModuleType("chameleon_core.eval.world")
    fake.main = lambda argv: seen.setdefault("argv", argv) and 0
    monkeypatch.setitem(sys.modules, "chameleon_core.eval.world", fake)
    assert cli.main(["world", "--x", "1"]) == 0
    assert seen["argv"] == ["--x", "1"]


def test_cli_absent_subcommand_module_gives_a_clear_message(monkeypatch, capsys):
    monkeypatch.setitem(cli.SUBCOMMANDS, "later", cli.Subcommand(".not_written_yet", "a future scorer"))
    assert cli.main(["later"]) == 2
    err = capsys.readouterr().err
    assert "chameleon_core.eval.not_written_yet is missing" in err and "Traceback" not in err
    assert cli.main(["nonsense"]) == 2
    assert "unknown subcommand 'nonsense'" in capsys.readouterr().err


# --- model-based metrics, with tiny random models -------------------------------------------------------------------


@pytest.fixture
def tiny_clip(tmp_path):
    transformers = pytest.importorskip("transformers", reason="the CLIP / DINOv2 metrics need transformers")
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "vocab_size": 64, "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=8)
    model = transformers.CLIPModel(cfg).eval()
    model.save_pretrained(tmp_path / "clip")
    return model, tmp_path / "clip"


def test_clip_preprocessing_matches_transformers_processor(tiny_clip):
    transformers = pytest.importorskip("transformers")
    _, folder = tiny_clip
    encoder = feature_models.load_clip(folder)
    processor_cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    processor = processor_cls(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    image = np.random.default_rng(3).integers(0, 256, (45, 70, 3), np.uint8)
    ours = encoder.preprocess([image])
    theirs = torch.as_tensor(np.asarray(processor(images=[image], return_tensors="pt")["pixel_values"]))
    assert ours.shape == theirs.shape == (1, 3, 32, 32)
    assert (ours - theirs).abs().mean() < 0.02  # both bicubic via PIL; rounding differs slightly


def test_clip_embedding_from_the_saved_folder(tiny_clip):
    model, folder = tiny_clip
    encoder = feature_models.load_clip(folder)
    images = [np.random.default_rng(i).integers(0, 256, (40, 40, 3), np.uint8) for i in range(3)]
    pixels = encoder.preprocess(images)
    with torch.no_grad():
        out = model.get_image_features(pixel_values=pixels)
    expected = torch.nn.functional.normalize(out if torch.is_tensor(out) else out.pooler_output, dim=-1)
    assert torch.allclose(encoder.embed(images), expected, atol=1e-5)


def test_clip_vision_only_folder_gives_the_same_embedding(tiny_clip, tmp_path):
    transformers = pytest.importorskip("transformers")
    model, folder = tiny_clip
    vision = transformers.CLIPVisionModelWithProjection(model.config.vision_config)
    vision.config.projection_dim = model.config.projection_dim
    vision = transformers.CLIPVisionModelWithProjection(vision.config).eval()
    vision.vision_model.load_state_dict(model.vision_model.state_dict())
    vision.visual_projection.load_state_dict(model.visual_projection.state_dict())
    vision.save_pretrained(tmp_path / "clip-vision")
    images = [np.random.default_rng(i).integers(0, 256, (40, 50, 3), np.uint8) for i in range(2)]
    full, alone = feature_models.load_clip(folder), feature_models.load_clip(tmp_path / "clip-vision")
    assert torch.allclose(full.embed(images), alone.embed(images), atol=1e-5)


def test_garment_and_reference_similarity_with_tiny_clip_and_dino(tiny_clip, tmp_path):
    transformers = pytest.importorskip("transformers")
    _, clip_folder = tiny_clip
    torch.manual_seed(1)
    dino = transformers.Dinov2Model(transformers.Dinov2Config(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
        patch_size=8)).eval()
    dino.save_pretrained(tmp_path / "dinov2")
    scorers = hgc.load_scorers({"clip": clip_folder, "dino": tmp_path / "dinov2"}, [])
    assert scorers.dino.preprocess.crop == (224, 224)  # DINOv2's published preprocessing

    meta = write_bench(tmp_path / "bench", rows=1)
    sample = hgc.read_meta(meta, tmp_path / "gen")[0]
    garment = videos.read_rgb(sample.garment)
    # A "video" whose frames are the padded garment itself: garment similarity is exactly 1.
    frames = np.repeat(hgc.pad_square_white(garment)[None], 3, axis=0)
    write_frames(tmp_path / "gen" / "output_0.mp4", frames)
    r = hgc.score_video(sample, scorers, hgc.Settings(frame_stride=1))
    assert r["garment_clip"] == pytest.approx(1.0, abs=1e-5)
    assert r["garment_dino"] == pytest.approx(1.0, abs=1e-5)
    reference = videos.read_rgb(sample.reference)
    expected = float(scorers.clip.embed([reference])[0] @ scorers.clip.embed([frames[0]])[0])
    assert r["reference_clip"] == pytest.approx(expected, abs=1e-5)
    assert r["aesthetic"] is None and r["face_similarity"] is None


def random_aesthetic_state(dim: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = {0: (1024, dim), 2: (128, 1024), 4: (64, 128), 6: (16, 64), 7: (1, 16)}
    state = {}
    for i, (o, n) in shapes.items():
        state[f"layers.{i}.weight"] = torch.randn(o, n, generator=g) / math.sqrt(n)
        state[f"layers.{i}.bias"] = torch.randn(o, generator=g) * 0.1
    return state


def test_aesthetic_predictor_is_the_laion_linear_stack(tmp_path):
    from safetensors.torch import save_file

    state = random_aesthetic_state(8)
    save_file(state, str(tmp_path / "a.safetensors"))
    torch.save(state, tmp_path / "a.pth")
    x = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    expected = x
    for i in (0, 2, 4, 6, 7):  # LAION's MLP has no activations; dropout is off at inference
        expected = expected @ state[f"layers.{i}.weight"].T + state[f"layers.{i}.bias"]
    for name in ("a.safetensors", "a.pth"):
        assert torch.allclose(feature_models.load_aesthetic(tmp_path / name)(x), expected[:, 0], atol=1e-5)


def test_aesthetic_refuses_pickles_and_wrong_files(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"layers.0.weight": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(feature_models.ModelLoadError, match="cannot read"):
        feature_models.load_aesthetic(tmp_path / "evil.pth")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(feature_models.ModelLoadError, match="not the LAION aesthetic MLP"):
        feature_models.load_aesthetic(tmp_path / "other.pth")
    with pytest.raises(feature_models.MissingModelFile, match="improved-aesthetic-predictor"):
        feature_models.load_aesthetic(tmp_path / "absent.safetensors")


def test_aesthetic_scores_clip_frames(tiny_clip, tmp_path):
    from safetensors.torch import save_file

    _, clip_folder = tiny_clip
    save_file(random_aesthetic_state(8), str(tmp_path / "aesthetic.safetensors"))
    scorers = hgc.load_scorers({"clip": clip_folder, "aesthetic": tmp_path / "aesthetic.safetensors"}, [])
    frames = translating(4, 1, 0, h=40, w=40)
    write_frames(tmp_path / "gen" / "output_0.mp4", frames)
    sample = hgc.read_meta(write_bench(tmp_path / "bench", rows=1), tmp_path / "gen")[0]
    r = hgc.score_video(sample, scorers, hgc.Settings(frame_stride=2))
    expected = float(scorers.aesthetic(scorers.clip.embed(list(frames[::2]))).mean())
    assert r["aesthetic"] == pytest.approx(expected, abs=1e-5)
    save_file(random_aesthetic_state(12), str(tmp_path / "wide.safetensors"))
    with pytest.raises(feature_models.ModelLoadError, match="12-d CLIP embeddings .* 8-d"):
        hgc.load_scorers({"clip": clip_folder, "aesthetic": tmp_path / "wide.safetensors"}, [])


def test_clip_folder_that_is_not_clip_is_a_clear_error(tmp_path):
    pytest.importorskip("transformers")
    (tmp_path / "clip").mkdir()
    with pytest.raises(feature_models.ModelLoadError, match="--clip: cannot load CLIPModel"):
        feature_models.load_clip(tmp_path / "clip")


# --- face identity --------------------------------------------------------------------------------------------------


def test_align_face_undoes_a_similarity_transform():
    crop = np.repeat(texture(112, seed=4)[..., None], 3, -1)
    angle, scale, shift = math.radians(12), 1.7, np.array([40.0, 25.0])
    rot = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    forward = np.hstack([rot, shift[:, None]]).astype(np.float32)  # crop -> photo
    photo = cv2.warpAffine(crop, forward, (260, 260))
    landmarks = feature_models.ARCFACE_TEMPLATE @ rot.T + shift
    aligned = feature_models.align_face(photo, landmarks)
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(aligned[inner].astype(float) - crop[inner]).mean() < 3  # bilinear resampling twice


def test_face_embedder_names_both_missing_files(tmp_path):
    with pytest.raises(feature_models.MissingModelFile, match="--face: .*w600k_r50.onnx"):
        feature_models.FaceEmbedder(tmp_path / "arcface.onnx", tmp_path / "yunet.onnx")
    (tmp_path / "arcface.onnx").write_bytes(b"x")
    with pytest.raises(feature_models.MissingModelFile, match="--face-detector: .*yunet.onnx.*opencv_zoo"):
        feature_models.FaceEmbedder(tmp_path / "arcface.onnx", tmp_path / "yunet.onnx")


def test_arcface_recognizer_feeds_rgb_scaled_to_plus_minus_one(tmp_path):
    onnx = pytest.importorskip("onnx", reason="building a tiny ONNX recogniser needs the onnx package")
    from onnx import TensorProto, helper, numpy_helper

    size = feature_models.ARCFACE_SIZE
    weight = np.random.default_rng(5).standard_normal((3 * size * size, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "w"], ["out"])],
        "tiny_arcface",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "arcface.onnx")

    crop = np.random.default_rng(6).integers(0, 256, (size, size, 3), np.uint8)
    vector = feature_models.ArcFaceRecognizer(tmp_path / "arcface.onnx").embed_aligned(crop)
    chw = (crop.astype(np.float32).transpose(2, 0, 1) - 127.5) / 127.5  # RGB planes, as insightface feeds it
    expected = chw.reshape(-1) @ weight
    assert vector == pytest.approx(expected / np.linalg.norm(expected), abs=1e-4)
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(feature_models.ModelLoadError, match="--face: OpenCV cannot load .*junk.onnx"):
        feature_models.ArcFaceRecognizer(tmp_path / "junk.onnx")
