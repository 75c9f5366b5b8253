"""World metrics on constructed cases with known answers, and ``python -m chameleon_core.eval world``."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import pytest
import torch

from chameleon_core.eval.world import (
    colour_classes,
    garment_accuracy,
    identity_error,
    leakage,
    main,
    motion_agreement,
    motion_scores,
    motion_trajectory,
    pattern_of,
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
from chameleon_core.world.catalog import BACKGROUND, GARMENT_COLOUR, PATTERN
from chameleon_core.world.render import GARMENT_LABEL

FRAMES = 17


def _sample(seed: int = 1, **garment):
    s = sample_world(seed)
    return dataclasses.replace(s, garment=dataclasses.replace(s.garment, **garment)) if garment else s


def test_colour_classes_name_palette_colours_and_their_shades():
    for i, (name, rgb) in enumerate(GARMENT_COLOUR.items()):
        px = torch.tensor([rgb, [round(c * 0.4) for c in rgb]], dtype=torch.float32) / 255
        cls, dark = colour_classes(px)
        assert cls.tolist() == [i, i] and dark.tolist() == [False, True], name


@pytest.mark.parametrize("pattern", PATTERN)
def test_pattern_of_recognises_every_pattern_in_every_motion(pattern):
    for seed, motion in enumerate(MOTION):
        s = dataclasses.replace(_sample(seed, pattern=pattern), motion=motion)
        r = render(s, frames=FRAMES)
        _, dark = colour_classes(r.float_frames())
        found = [pattern_of(dark[t], r.labels[t] == GARMENT_LABEL) for t in range(FRAMES)]
        assert all(f in (pattern, None) for f in found) and found.count(None) < FRAMES // 2


def test_exact_garment_swap_scores_full_accuracy_and_zero_leakage():
    s = _sample(2)
    new = sample_switch_garment(s, 0)
    truth = render(s, frames=FRAMES, switch_to=new, switch_frame=8)
    scores = score_video(truth.float_frames(), s, switch_to=new, switch_frame=8)
    assert scores["garment_accuracy"] == 1.0 and scores["garment_colour"] == 1.0 and scores["garment_pattern"] == 1.0
    assert scores["garment_accuracy_before"] == 1.0
    assert scores["leakage"] == 0.0 and scores["identity_error"] == 0.0
    assert scores["motion_agreement"] == pytest.approx(1.0) and scores["motion_correct"] == 1.0
    assert scores["switch_cut"] < 2.0


def test_no_switch_scores_full_leakage_and_no_accuracy():
    """A stream that ignores the switch keeps the old garment: leakage 1, colour accuracy 0 after the switch."""
    s = _sample(2)
    new = sample_switch_garment(s, 0)
    kept = render(s, frames=FRAMES).float_frames()
    scores = score_video(kept, s, switch_to=new, switch_frame=8)
    assert scores["garment_colour"] < 0.05 and scores["leakage"] > 0.9
    # half of the new garment's region still in the old colour: leakage about a half
    labels = render(s, frames=FRAMES, switch_to=new, switch_frame=8).labels
    mixed = render(s, frames=FRAMES, garment=new).float_frames().clone()
    old = torch.tensor(GARMENT_COLOUR[s.garment.colour]) / 255
    rows = torch.arange(64)[None, :, None, None] < 32
    region = (labels == GARMENT_LABEL)[..., None] & rows
    mixed = torch.where(region, old.expand_as(mixed), mixed)
    expected = (region[8:, ..., 0]).sum().item() / (labels[8:] == GARMENT_LABEL).sum().item()
    assert leakage(mixed, labels, s.garment.colour, 8) == pytest.approx(expected)


def test_wrong_colour_and_wrong_pattern_score_low():
    s = _sample(4, pattern="stripes")
    truth = render(s, frames=FRAMES)
    other_colour = next(c for c in GARMENT_COLOUR if c != s.garment.colour)
    wrong = render(s, frames=FRAMES, garment=dataclasses.replace(s.garment, colour=other_colour)).float_frames()
    acc = garment_accuracy(wrong, truth.labels, s.garment)
    assert acc["colour"] == 0.0 and acc["pattern"] == 1.0 and acc["accuracy"] == 0.5
    checks = render(s, frames=FRAMES, garment=dataclasses.replace(s.garment, pattern="checks")).float_frames()
    acc = garment_accuracy(checks, truth.labels, s.garment)
    assert acc["pattern"] == 0.0 and acc["colour"] == 1.0


def test_identity_error_is_the_region_colour_difference():
    s = _sample(5)
    truth = render(s, frames=5)
    video = truth.float_frames().clone()
    skin = truth.labels == 1
    video[skin] = (video[skin] + torch.tensor([0.1, -0.2, 0.0])).clamp(0, 1)
    err = identity_error(video, truth.float_frames(), truth.labels)
    expected = (video[skin].mean(0) - truth.float_frames()[skin].mean(0)).abs().mean().item()
    assert err["skin"] == pytest.approx(expected) and err["skin"] > 0.05
    assert err["hair"] == 0.0 and err["background"] == 0.0
    assert err["identity"] == pytest.approx(expected / 3)


def test_frozen_video_scores_zero_motion_and_the_right_motion_is_recognised():
    for seed, motion in enumerate(MOTION):
        s = dataclasses.replace(_sample(seed), motion=motion)
        truth = render(s, frames=FRAMES).float_frames()
        wall = BACKGROUND[s.identity.background]
        frozen = truth[:1].expand_as(truth)
        assert motion_agreement(frozen, truth, wall) == 0.0
        assert temporal_jitter(frozen) == 0.0
        scores = motion_scores(truth, s)
        assert max(scores, key=scores.get) == motion, (motion, scores)
    # a pan moves the poles, a walk does not
    walk = dataclasses.replace(_sample(0), motion="walk")
    pan = dataclasses.replace(walk, motion="pan")
    wall = BACKGROUND[walk.identity.background]
    assert abs(motion_trajectory(render(pan, frames=FRAMES).float_frames(), wall)[-1, 4]) > 0.2
    assert abs(motion_trajectory(render(walk, frames=FRAMES).float_frames(), wall)[-1, 4]) < 0.05


def test_hard_cut_scores_a_large_cut_and_a_seamless_switch_does_not():
    a, b = _sample(6), _sample(7)
    a = dataclasses.replace(a, motion="walk")
    new = sample_switch_garment(a, 0)
    seamless = render(a, frames=FRAMES, switch_to=new, switch_frame=8)
    keep = seamless.labels != GARMENT_LABEL
    assert switch_cut(seamless.float_frames(), 8, keep) < 2.0
    hard = torch.cat([render(a, frames=FRAMES).float_frames()[:8], render(b, frames=FRAMES).float_frames()[8:]])
    assert switch_cut(hard, 8, keep) > 5.0
    still = seamless.float_frames()[:1].expand(FRAMES, -1, -1, -1).clone()
    still[8:] = 1 - still[8:]
    assert switch_cut(still, 8) > 1000  # nothing else moves: any jump is a cut
    with pytest.raises(ValueError, match="switch_frame"):
        switch_cut(still, 0)


def test_world_command_scores_a_folder_of_videos(tmp_path, capsys):
    csv = write_dataset(tmp_path / "data", "test", count=2, size=32, frames=9, seed=1)
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
    assert exact["garment_accuracy"] == 1.0 and exact["identity_error"] == 0.0
    assert exact["motion_agreement"] == pytest.approx(1.0)
    assert result["videos"]["test_00001"]["identity_error"] > 0.05
    assert math.isclose(result["mean"]["garment_accuracy"],
                        (1.0 + result["videos"]["test_00001"]["garment_accuracy"]) / 2)
    # switch mode scores against the metadata's switch garment
    assert main(["--data", str(data), "--videos", str(videos), "--out", str(out), "--switch-frame", "4"]) == 0
    assert json.loads(out.read_text())["videos"]["test_00000"]["leakage"] > 0.9
    # bad folders are named
    assert main(["--data", str(tmp_path / "nope"), "--videos", str(videos), "--out", str(out)]) == 2
    assert "nope" in capsys.readouterr().err
    (videos / "stray.mp4").write_bytes(b"")
    assert main(["--data", str(data), "--videos", str(videos), "--out", str(out)]) == 2
    assert "stray.mp4" in capsys.readouterr().err
