"""The synthetic fashion world: sampler and split, renderer, captions and their features, dataset files, codec."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from chameleon_core.checkpoints import load_vae
from chameleon_core.text import load_prompt_embeddings
from chameleon_core.training.data import (
    load_sample,
    parse_caption,
    read_train_csv,
    read_video,
)
from chameleon_core.vae import build_vae
from chameleon_core.world import (
    GARMENT_COLOUR,
    MOTION,
    caption,
    encode_caption,
    render,
    render_garment_on_white,
    render_reference,
    sample_switch_garment,
    sample_world,
    save_caption_features,
    split_of,
    write_dataset,
)
from chameleon_core.world.catalog import HAIR, MARK, MOTION_CYCLE, PATTERN, SKIN, palette_separation
from chameleon_core.world.codec import (
    CODEC_CONFIG,
    CodecGateError,
    image_forward,
    init_temporal_taps,
    training_forward,
    world_clips,
)
from chameleon_core.world.dataset import ground_truth, load_labels, read_metadata
from chameleon_core.world.render import GARMENT_LABEL, pose_frame


def test_sampler_is_seeded_and_splits_are_disjoint_combinations():
    assert sample_world(5, "train") == sample_world(5, "train")
    assert sample_world(5, "train") != sample_world(6, "train")
    train = [sample_world(i, "train") for i in range(300)]
    test = [sample_world(i, "test") for i in range(150)]
    assert all(s.split == "train" for s in train) and all(s.split == "test" for s in test)
    assert not {s.combination for s in train} & {s.combination for s in test}
    # every single attribute value is seen in both splits: only the combinations are held out
    for values, get in ((SKIN, lambda s: s.identity.skin), (HAIR, lambda s: s.identity.hair),
                        (GARMENT_COLOUR, lambda s: s.garment.colour), (PATTERN, lambda s: s.garment.pattern),
                        (MOTION, lambda s: s.motion)):
        assert {get(s) for s in train} == set(values) == {get(s) for s in test}
    # the held-out fraction is about 1 in 5 over the whole combination space
    held = sum(split_of(s.identity, dataclasses.replace(s.garment, colour=c), m) == "test"
               for s in train[:20] for c in GARMENT_COLOUR for m in MOTION)
    assert 0.12 < held / (20 * len(GARMENT_COLOUR) * len(MOTION)) < 0.28


def test_reference_and_switch_garments_differ_but_keep_the_kind():
    for i in range(50):
        s = sample_world(i)
        assert s.reference_garment.kind == s.garment.kind and s.reference_garment.colour != s.garment.colour
        other = sample_switch_garment(s, i)
        assert other.kind == s.garment.kind and other.colour != s.garment.colour


def test_render_is_deterministic_and_masks_partition_every_frame():
    s = sample_world(3)
    a, b = render(s, frames=9), render(s, frames=9)
    assert a.frames.dtype == torch.uint8 and a.frames.shape == (9, 64, 64, 3) and a.labels.shape == (9, 64, 64)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.labels, b.labels)
    masks = a.masks
    total = masks["garment"].int() + masks["body"].int() + masks["background"].int()
    assert torch.equal(total, torch.ones_like(total))
    assert all(masks[k].any() for k in masks)
    # garment pixels carry the garment colour or the pattern mark, nothing else
    colour = torch.tensor(GARMENT_COLOUR[s.garment.colour], dtype=torch.float32)
    pix = a.frames[masks["garment"]].float()
    plain = (pix - colour).abs().max(1).values <= 0.5
    mark = (pix - torch.tensor(MARK, dtype=torch.float32)).abs().max(1).values <= 0.5
    assert bool((plain | mark).all()) and bool(plain.any())


def test_the_world_is_animated_on_fours_and_clips_start_anywhere_in_a_motion():
    """One picture per latent frame: frame 0 alone, then groups of four equal frames; the next group moves on."""
    s = dataclasses.replace(sample_world(3), motion="walk", phase=0)
    clip = render(s, frames=17).frames
    for group in range(4):
        frames = clip[1 + 4 * group : 5 + 4 * group]
        assert all(torch.equal(frames[0], f) for f in frames[1:]), group
        assert not torch.equal(frames[0], clip[4 * group]), group  # the pose advances every group
    assert [pose_frame(t) for t in range(10)] == [0, 4, 4, 4, 4, 8, 8, 8, 8, 12]
    phases = {sample_world(i).phase for i in range(60)}
    assert len(phases) > 20 and min(phases) >= 0 and max(phases) < MOTION_CYCLE
    # a clip starting at phase p is the continuation of one starting at 0: same pictures, shifted
    late = render(dataclasses.replace(s, phase=8), frames=9).frames
    assert torch.equal(late[0], clip[8]) and torch.equal(late[1], clip[9])


def test_palette_entries_are_separated_and_the_garment_spans_several_latent_cells():
    distance, a, b = palette_separation()
    assert distance > 50, (a, b)
    # the garment covers several 16x16 latent cells in every frame of every motion
    for i in range(10):
        r = render(sample_world(i), frames=9)
        cells = (r.labels == GARMENT_LABEL).reshape(9, 4, 16, 4, 16).any(-1).any(-2).sum((1, 2))
        assert int(cells.min()) >= 3, (i, cells)


def test_reference_is_frame_zero_redressed():
    s = sample_world(11)
    assert s.phase > 0  # the clip's first frame, wherever in its motion it starts
    clip, ref = render(s, frames=5), render_reference(s)
    assert ref.frames.shape == (1, 64, 64, 3)
    # outside both garments the reference is the first frame exactly
    outside = (clip.labels[0] != GARMENT_LABEL) & (ref.labels[0] != GARMENT_LABEL)
    assert torch.equal(ref.frames[0][outside], clip.frames[0][outside])
    ref_colour = torch.tensor(GARMENT_COLOUR[s.reference_garment.colour], dtype=torch.float32)
    garment_px = ref.frames[0][ref.labels[0] == GARMENT_LABEL].float()
    assert ((garment_px - ref_colour).abs().max(1).values <= 0.5).float().mean() > 0.3


def test_switch_render_changes_only_the_garment_from_the_switch_frame():
    s = sample_world(2)
    new = sample_switch_garment(s, 0)
    plain, switched = render(s, frames=9), render(s, frames=9, switch_to=new, switch_frame=4)
    assert torch.equal(plain.frames[:4], switched.frames[:4])
    assert torch.equal(render(s, frames=9, garment=new).frames[4:], switched.frames[4:])
    with pytest.raises(ValueError, match="switch_to"):
        render(s, frames=9, switch_to=new)


def test_try_off_image_is_the_garment_on_transparent_white():
    g = sample_world(4).garment
    rgba = render_garment_on_white(g)
    assert rgba.shape == (64, 64, 4) and rgba.dtype == torch.uint8
    inside = rgba[..., 3] == 255
    assert 0.1 < inside.float().mean() < 0.8 and bool(((rgba[..., 3] == 0) | inside).all())
    assert bool((rgba[~inside][:, :3] == 255).all())


def test_caption_parts_and_features():
    s = sample_world(7)
    cap = parse_caption(json.dumps(caption(s)))
    dynamic, static = cap["en_long"]
    assert s.identity.skin in static and s.identity.background in static
    # no garment words: the garment can only come from the garment image
    words = set(encode_words := static.replace(",", " ").split())
    assert not words & ({*GARMENT_COLOUR, *PATTERN, "shirt", "dress", "striped", "dotted", "checked"}), encode_words
    assert s.garment.colour in parse_caption(json.dumps(caption(s, garment_words=True)))["en_long"][1]
    assert s.garment.colour not in dynamic
    a, b = encode_caption(static, dim=32), encode_caption(static, dim=32)
    assert a.shape == (1, len(static.replace(",", " ").split()) + 1, 32) and torch.equal(a, b)
    other = static.replace(s.identity.skin, "pale" if s.identity.skin != "pale" else "dark")
    assert not torch.equal(encode_caption(other, dim=32), a)
    assert encode_caption("", dim=8).shape == (1, 1, 8)  # the end token alone
    assert encode_caption(static, dim=8, max_len=6).shape == (1, 6, 8)
    assert not torch.equal(encode_caption(static, dim=8, seed=1), encode_caption(static, dim=8))


def test_caption_features_load_as_prompt_embeddings(tmp_path):
    path = save_caption_features(tmp_path / "p.safetensors", "a person walks", dim=64)
    assert torch.equal(load_prompt_embeddings(path, text_dim=64), encode_caption("a person walks", dim=64))


def test_dataset_is_readable_by_the_training_loader_and_deterministic(tmp_path, monkeypatch):
    from chameleon_core.world import dataset

    csv_a = write_dataset(tmp_path / "a", "test", count=3, size=32, frames=9, seed=3)
    # in worker processes, one sample a task (three tasks on two workers): the same bytes
    monkeypatch.setattr(dataset, "WORKER_SAMPLES", 1)
    write_dataset(tmp_path / "b", "test", count=3, size=32, frames=9, seed=3, workers=2)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 1 + 3 * 5
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    rows = read_train_csv(csv_a)
    assert len(rows) == 3
    meta = read_metadata(rows[0].video)
    truth = ground_truth(meta)
    assert meta["sample"].split == "test" and meta["frames"] == 9
    # the video is lossless, the labels are the renderer's
    video = read_video(rows[0].video, 9, "test")
    assert torch.equal((video * 255).round().to(torch.uint8), truth.frames)
    assert torch.equal(load_labels(rows[0].video), truth.labels)
    sample = load_sample(rows[0], 9, 32, 32)
    assert sample["video"].shape == (1, 3, 9, 32, 32)
    assert sample["texts"]["dynamic"] == meta["caption"]["en_long"][0]
    ref = np.asarray(Image.open(rows[0].reference))
    assert torch.equal(torch.from_numpy(ref.copy()), render_reference(meta["sample"], size=32).frames[0])
    # the garment image composites to the garment on white
    garment = sample["garment"][0]
    assert garment.shape == (3, 32, 32) and float(garment.max()) == 1.0


def test_dataset_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="4k\\+1"):
        write_dataset(tmp_path, "train", count=1, frames=8)
    with pytest.raises(ValueError, match="split"):
        write_dataset(tmp_path, "val", count=1)
    with pytest.raises(ValueError, match="workers must be at least 1, got 0"):
        write_dataset(tmp_path, "train", count=1, workers=0)


def test_codec_training_pass_is_the_inference_network():
    """With the posterior mean, the training pass reconstructs exactly what WanVAE.encode + decode give, and phase
    1's first-frame pass (current-frame taps only) is the same network on a first frame."""
    vae = build_vae(CODEC_CONFIG, seed=0)
    video = world_clips(1, "train", size=32, frames=5, seed=0)
    rec, kl = training_forward(vae.model, video, None)
    with torch.no_grad():
        expected = vae.decode(vae.encode(video), clamp=False)
    assert rec.shape == expected.shape == video.shape and kl.shape == (1, 48, 2, 2, 2)
    torch.testing.assert_close(rec, expected, rtol=1e-4, atol=1e-5)
    first, _ = image_forward(vae.model, video[:, :, 0], None)
    torch.testing.assert_close(first, expected[:, :, 0], rtol=1e-4, atol=1e-5)


def test_temporal_init_makes_every_group_one_picture():
    """After phase 1, a later group of four equal frames decodes to four equal frames (one picture per latent)."""
    vae = build_vae(CODEC_CONFIG, seed=0)
    init_temporal_taps(vae.model)
    video = world_clips(1, "train", size=32, frames=9, seed=0)
    with torch.no_grad():
        out = vae.decode(vae.encode(video), clamp=False)
    for group in range(2):
        frames = out[:, :, 1 + 4 * group : 5 + 4 * group]
        torch.testing.assert_close(frames, frames[:, :, :1].expand_as(frames))


def test_codec_trains_saves_loads_and_is_gated(tmp_path):
    from chameleon_core.world.codec import CodecPlan, check_codec_gate, codec_gate, train_codec

    plan = CodecPlan(image_steps=2, image_seconds=60, video_steps=1, video_seconds=60, pool=2, image_batch=2,
                     video_batch=1, gate_clips=2)
    report = train_codec(tmp_path / "codec.safetensors", plan=plan, size=64)
    vae = load_vae(report["path"])
    assert vae.config == CODEC_CONFIG
    assert report["image_steps"] == 2 and report["video_steps"] == 1 and np.isfinite(report["gate"]["psnr"])
    assert vae.family.name == "wan2.2"  # the DiT's latent statistics apply: a released-VAE latent space
    video = world_clips(1, "test", size=64, frames=5, seed=1)
    assert vae.decode(vae.encode(video)).shape == video.shape
    # three steps cannot show a garment: the gate says so, with its numbers and the fix
    assert not codec_gate(vae, clips=2).passed
    with pytest.raises(CodecGateError, match=r"cannot show a garment: codec gate FAILS.*garment colour accuracy"):
        check_codec_gate(vae, clips=2)


def test_decoder_only_training_keeps_the_encoder_bit_for_bit(tmp_path):
    """A decoder-only continuation changes the decoder and leaves the encoder (rounded to bf16, as shipped) exactly:
    latents cached with the first codec stay valid for the second."""
    from safetensors.torch import load_file

    from chameleon_core.checkpoints import save_vae
    from chameleon_core.vae import build_vae
    from chameleon_core.world.codec import CodecPlan, main, train_codec

    first = save_vae(tmp_path / "first.safetensors", build_vae(CODEC_CONFIG, seed=3))
    plan = CodecPlan(image_steps=2, image_seconds=60, video_steps=1, video_seconds=60, pool=2, image_batch=2,
                     video_batch=1, gate_clips=2, decoder_only=True)
    report = train_codec(tmp_path / "second.safetensors", plan=plan, size=64, init=first)
    a, b = load_file(str(first)), load_file(report["path"])
    encoder = [k for k in a if k.startswith(("encoder.", "conv1."))]
    decoder = [k for k in a if k.startswith(("decoder.", "conv2."))]
    assert encoder and decoder and len(encoder) + len(decoder) == len(a)
    for k in encoder:
        torch.testing.assert_close(b[k], a[k].to(torch.bfloat16).float(), rtol=0, atol=0)
    assert any(not torch.equal(b[k], a[k].to(torch.bfloat16).float()) for k in decoder)
    with pytest.raises(SystemExit):  # the command line refuses it without a codec to continue
        main(["--out", str(tmp_path / "x.safetensors"), "--decoder-only"])


def test_codec_gate_passes_a_perfect_codec_and_fails_a_blurring_one(monkeypatch):
    """The gate scores what the codec gives back: the ground truth itself passes, a blurred copy fails."""
    import chameleon_core.world.codec as codec_module

    monkeypatch.setattr(codec_module, "reconstruct", lambda vae, frames: frames)
    assert codec_module.codec_gate(None, clips=3).passed

    def blur(vae, frames):
        x = frames.permute(0, 3, 1, 2)
        return torch.nn.functional.avg_pool2d(x, 9, stride=1, padding=4, count_include_pad=False).permute(0, 2, 3, 1)

    monkeypatch.setattr(codec_module, "reconstruct", blur)
    report = codec_module.codec_gate(None, clips=3)
    assert not report.passed and report.garment_colour < 0.9
