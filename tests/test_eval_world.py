"""World metrics on constructed cases with known answers (each metric shown to fail where it should), and
``python -m chameleon_core.eval world``."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import pytest
import torch

from chameleon_core.eval.world import (
    COLOURS,
    MARK_CLASS,
    NOT_GARMENT,
    GroundTruth,
    classify,
    garment_classes,
    garment_colour_accuracy,
    identity_scores,
    leakage,
    main,
    motion_agreement,
    motion_scores,
    motion_trajectory,
    picture_boundaries,
    score_video,
    switch_cut,
    temporal_jitter,
)
from chameleon_core.world import (
    MOTION,
    render,
    sample_switch_garment,
    sample_world,
    write_dataset,
)
from chameleon_core.world.catalog import BACKGROUND, GARMENT_COLOUR, PATTERN, palette, palette_separation
from chameleon_core.world.render import GARMENT_LABEL

FRAMES = 17


def _sample(seed: int = 1, **garment):
    s = sample_world(seed)
    return dataclasses.replace(s, garment=dataclasses.replace(s.garment, **garment)) if garment else s


def test_every_palette_colour_classifies_as_itself_and_a_small_error_does_not_change_it():
    entries = palette()
    rgb = torch.tensor([e.rgb for e in entries], dtype=torch.float32) / 255
    assert classify(rgb).tolist() == list(range(len(entries)))
    # a pixel off by a bit less than half the separation, in any direction, keeps its class (scene colours --
    # walls, poles, trousers -- may mix among themselves: all are "not a garment" and not the person)
    off = 0.49 * palette_separation()[0] / 255
    told_apart = [i for i, e in enumerate(entries) if e.kind not in ("wall", "pole", "trousers")]
    for direction in torch.eye(3).tolist() + [[1 / 3**0.5] * 3]:
        moved = rgb + off * torch.tensor(direction) * torch.where(rgb > 0.5, -1.0, 1.0)
        assert classify(moved)[told_apart].tolist() == told_apart
        assert garment_classes(moved).tolist() == garment_classes(rgb).tolist()
    cls = garment_classes(rgb).tolist()
    assert cls[: len(COLOURS)] == list(range(len(COLOURS))) and cls[len(COLOURS)] == MARK_CLASS
    assert set(cls[len(COLOURS) + 1:]) == {NOT_GARMENT}


def test_exact_garment_swap_scores_full_accuracy_and_zero_leakage():
    s = _sample(2)
    new = sample_switch_garment(s, 0)
    truth = render(s, frames=FRAMES, switch_to=new, switch_frame=9)
    scores = score_video(truth.float_frames(), s, switch_to=new, switch_frame=9)
    assert scores["garment_colour"] == 1.0 and scores["garment_pattern"] == 1.0
    assert scores["garment_colour_before"] == 1.0 and scores["not_garment"] == 0.0
    assert scores["leakage"] == 0.0 and scores["identity_error"] == 0.0
    assert scores["motion_agreement"] == pytest.approx(1.0) and scores["motion_correct"] == 1.0
    assert scores["switch_cut"] < 3.0  # an ordinary picture change (a hard cut: the next test)


@pytest.mark.parametrize("seed", range(4))
def test_controls_score_low_constant_frames_walls_and_the_old_garment(seed):
    """The controls every table carries must score low: a constant frame of the clip's mean colour, a frame of the
    wall colour, and a video that keeps the old garment (what a switch without refresh would draw)."""
    s = _sample(seed)
    new = sample_switch_garment(s, seed)
    gt = GroundTruth(s, size=64, frames=FRAMES, switch_to=new, switch_frame=8)
    mean = gt.video.reshape(-1, 3).mean(0).expand_as(gt.video).clone()
    wall = (torch.tensor(BACKGROUND[s.identity.background]) / 255).expand_as(gt.video).clone()
    for control in (mean, wall):
        scores = score_video(control, gt)
        assert scores["garment_colour"] == 0.0 and scores["garment_colour_before"] == 0.0, scores
        assert scores["identity_error"] == 1.0 and scores["motion_agreement"] == 0.0
    kept = render(s, frames=FRAMES).float_frames()
    scores = score_video(kept, gt)
    assert scores["garment_colour"] == 0.0 and scores["garment_colour_before"] == 1.0
    # leakage is the old colour's share of the new garment's region, counted here by exact RGB equality
    mask = gt.labels[8:] == GARMENT_LABEL
    old = torch.tensor(GARMENT_COLOUR[s.garment.colour]) / 255
    expected = ((kept[8:] - old).abs().amax(-1) < 1e-6)[mask].float().mean().item()
    assert scores["leakage"] == pytest.approx(expected) and scores["leakage"] > 0.3


def test_leakage_counts_the_old_colour_inside_the_mask_only():
    s = _sample(2, pattern="plain")
    new = dataclasses.replace(sample_switch_garment(s, 0), pattern="plain")
    gt = GroundTruth(s, size=64, frames=FRAMES, switch_to=new, switch_frame=8)
    mixed = gt.video.clone()
    old = torch.tensor(GARMENT_COLOUR[s.garment.colour]) / 255
    rows = torch.arange(64)[None, :, None] < 32
    region = (gt.labels == GARMENT_LABEL) & rows
    mixed[region] = old
    expected = region[8:].sum().item() / (gt.labels[8:] == GARMENT_LABEL).sum().item()
    assert leakage(mixed[8:], gt.labels[8:], s.garment.colour) == pytest.approx(expected)
    assert garment_colour_accuracy(mixed[8:], gt.video[8:], gt.labels[8:], new.colour) == pytest.approx(1 - expected)
    # painting the old colour outside the garment leaks nothing
    outside = gt.video.clone()
    outside[gt.labels == 0] = old
    assert leakage(outside[8:], gt.labels[8:], s.garment.colour) == 0.0


def test_wrong_colour_scores_zero_and_wrong_pattern_is_recognised():
    s = _sample(4, pattern="stripes")
    gt = GroundTruth(s, size=64, frames=FRAMES)
    for colour in GARMENT_COLOUR:
        if colour == s.garment.colour:
            continue
        wrong = render(s, frames=FRAMES, garment=dataclasses.replace(s.garment, colour=colour)).float_frames()
        scores = score_video(wrong, gt)
        assert scores["garment_colour"] == 0.0 and scores["garment_pattern"] == 1.0
    for pattern in PATTERN:
        if pattern != "stripes":
            other = render(s, frames=FRAMES, garment=dataclasses.replace(s.garment, pattern=pattern)).float_frames()
            assert score_video(other, gt)["garment_pattern"] < 0.2, pattern


def test_identity_scores_fall_when_skin_or_hair_change():
    s = _sample(5)
    truth = render(s, frames=5)
    assert identity_scores(truth.float_frames(), truth.labels, s) == {"skin": 1.0, "hair": 1.0,
                                                                     "identity_error": 0.0}
    video = truth.float_frames().clone()
    skin = truth.labels == 1
    other_skin = next(e for e in palette() if e.kind == "skin" and e.name != s.identity.skin)
    video[skin] = torch.tensor(other_skin.rgb, dtype=torch.float32) / 255
    scores = identity_scores(video, truth.labels, s)
    assert scores["skin"] == 0.0 and scores["hair"] == 1.0 and scores["identity_error"] == 0.5


def test_frozen_video_scores_zero_motion_and_the_right_motion_is_recognised():
    for seed, motion in enumerate(MOTION):
        s = dataclasses.replace(_sample(seed), motion=motion, phase=0)
        gt = GroundTruth(s, size=64, frames=FRAMES)
        frozen = gt.video[:1].expand_as(gt.video)
        assert motion_agreement(frozen, gt.video, gt.wall) == 0.0
        assert temporal_jitter(frozen) == 0.0
        scores = motion_scores(gt.video, gt)
        assert max(scores, key=scores.get) == motion, (motion, scores)
    walk = dataclasses.replace(_sample(0), motion="walk", phase=0)
    pan = dataclasses.replace(walk, motion="pan")
    wall = BACKGROUND[walk.identity.background]
    # the poles' measured shift follows the camera of a pan (the renderer's own camera offsets, frame by frame)
    from chameleon_core.world.render import pose_at, pose_frame

    measured = motion_trajectory(render(pan, frames=FRAMES).float_frames(), wall)[:, 4]
    camera = torch.tensor([pose_at("pan", pose_frame(t)).camera for t in range(FRAMES)])
    assert torch.corrcoef(torch.stack([measured, camera]))[0, 1] > 0.9, (measured, camera)


def test_pole_shift_is_the_camera_in_frame_units_and_zero_for_a_still_camera():
    """The poles' shift is the camera's offset magnified by the framing (checked against the renderer's own
    offsets), and stays still when the camera does, on every wall, while the figure walks or raises its arms in
    front of the poles (the trousers of a teal wall lie within FOREGROUND_DISTANCE of its pole colour)."""
    from chameleon_core.world.render import FRAMING_ZOOM, pose_at, pose_frame

    for wall_name, wall in BACKGROUND.items():
        base = _sample(0)
        base = dataclasses.replace(base, identity=dataclasses.replace(base.identity, background=wall_name), phase=5)
        for motion in ("walk", "raise_arms", "turn"):
            still = motion_trajectory(render(dataclasses.replace(base, motion=motion), frames=FRAMES).float_frames(),
                                      wall)[:, 4]
            assert still.abs().max() < 0.01, (wall_name, motion, still)
        pan = dataclasses.replace(base, motion="pan")
        measured = motion_trajectory(render(pan, frames=FRAMES).float_frames(), wall)[:, 4]
        camera = torch.tensor([pose_at("pan", pan.phase + pose_frame(t)).camera for t in range(FRAMES)])
        expected = (camera - camera[0]) * FRAMING_ZOOM
        assert (measured - expected).abs().max() < 0.02, (wall_name, measured, expected)


def test_too_short_videos_are_refused():
    s = _sample(1)
    two = render(s, frames=2).float_frames()
    with pytest.raises(ValueError, match="has 2 frame.*at least 5 frames"):
        score_video(two, s)
    with pytest.raises(ValueError, match="at least 5 frames"):
        motion_agreement(two, two, BACKGROUND[s.identity.background])


def test_hard_cut_scores_a_large_cut_and_a_seamless_switch_does_not():
    a = dataclasses.replace(_sample(6), motion="sway")
    b = next(s for s in map(_sample, range(7, 40)) if s.identity.background != a.identity.background)
    new = sample_switch_garment(a, 0)
    pictures = picture_boundaries(FRAMES)
    assert pictures == [1, 5, 9, 13]  # on fours: a new picture every fourth frame
    seamless = render(a, frames=FRAMES, switch_to=new, switch_frame=9)
    keep = seamless.labels != GARMENT_LABEL
    smooth = switch_cut(seamless.float_frames(), 9, keep, pictures)
    assert smooth < 2.0
    hard = torch.cat([render(a, frames=FRAMES).float_frames()[:9], render(b, frames=FRAMES).float_frames()[9:]])
    cut = switch_cut(hard, 9, keep, pictures)  # another person and wall, against a sway on fours
    assert cut > 2.5 and cut > 2 * smooth, (cut, smooth)
    # every frame compared (no boundaries): on fours most frames do not change, so any change reads as a cut
    assert switch_cut(seamless.float_frames(), 9, keep) > 100
    still = seamless.float_frames()[:1].expand(FRAMES, -1, -1, -1).clone()
    still[9:] = 1 - still[9:]
    assert switch_cut(still, 9, boundaries=pictures) > 1000  # nothing else moves: any jump is a cut
    with pytest.raises(ValueError, match="switch_frame"):
        switch_cut(still, 0)


def test_world_command_scores_a_folder_of_videos(tmp_path, capsys):
    csv = write_dataset(tmp_path / "data", "test", count=2, size=64, frames=9, seed=1)
    data = csv.parent / "test"
    videos = tmp_path / "gen"
    videos.mkdir()
    shutil.copy(data / "test_00000.mp4", videos / "test_00000.mp4")  # the ground truth itself
    shutil.copy(data / "test_00000.mp4", videos / "test_00001.mp4")  # another sample's clip
    out = tmp_path / "scores.json"
    assert main(["--data", str(data), "--videos", str(videos), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["count"] == 2
    exact = result["videos"]["test_00000"]
    assert exact["garment_colour"] == 1.0 and exact["identity_error"] == 0.0
    assert exact["motion_agreement"] == pytest.approx(1.0)
    assert result["videos"]["test_00001"]["identity_error"] > 0.05
    assert math.isclose(result["mean"]["garment_colour"],
                        (1.0 + result["videos"]["test_00001"]["garment_colour"]) / 2)
    # switch mode scores against the metadata's switch garment
    assert main(["--data", str(data), "--videos", str(videos), "--out", str(out), "--switch-frame", "4"]) == 0
    assert json.loads(out.read_text())["videos"]["test_00000"]["leakage"] > 0.4
    # bad folders are named
    assert main(["--data", str(tmp_path / "nope"), "--videos", str(videos), "--out", str(out)]) == 2
    assert "nope" in capsys.readouterr().err
    (videos / "stray.mp4").write_bytes(b"")
    assert main(["--data", str(data), "--videos", str(videos), "--out", str(out)]) == 2
    assert "stray.mp4" in capsys.readouterr().err
