"""The option workflows (issue 16) in a real ComfyUI: try-on onto a video, keyframe-then-fill, motion transfer,
condition weighting (stream and teacher), local attention. Each example workflow runs at tiny size and writes a
video; bad inputs fail the option node with the node, input, value and fix named; a try-on with a zero mask gives
back the source video's latents exactly (the mask is honoured through the node path).

Reuses the ``server`` fixture and helpers of ``tests/test_comfyui_integration.py`` (its own ComfyUI per module).
Skipped without ``COMFYUI_DIR``.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.test_comfyui_integration import REPO, SIZE, _error, load_api, server, tiny  # noqa: F401  (server: the fixture)

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(not os.environ.get("COMFYUI_DIR"), reason="COMFYUI_DIR is not set: point it at a ComfyUI "
                                                                  "checkout to run the real-ComfyUI integration test"),
]

OPTION_NAMES = ["video_tryon", "video_tryon_keyframes", "motion_transfer", "condition_weighting_stream",
                "condition_weighting_teacher", "local_attention_stream"]

# Tiny frame counts per workflow: source video frames, then the Generate nodes' frames in id order.
SOURCE_FRAMES = {"video_tryon": 21, "video_tryon_keyframes": 45, "motion_transfer": 21}
GENERATE_FRAMES = {"video_tryon": [9, 8], "motion_transfer": [21], "condition_weighting_stream": [21],
                   "local_attention_stream": [45]}


def tiny_options(name: str) -> dict:
    """An option workflow at tiny size and length (checkpoints, resolution, frames; strengths and biases kept)."""
    p = tiny(load_api(name))
    gens = iter(GENERATE_FRAMES.get(name, []))
    for node_id in sorted(p, key=int):
        t, i = p[node_id]["class_type"], p[node_id]["inputs"]
        if t in ("ImageScale", "SolidMask"):
            i["width"] = i["height"] = SIZE
        elif t == "RepeatImageBatch":
            i["amount"] = SOURCE_FRAMES[name]
        elif t == "ChameleonStreamGenerate":
            i["frames"] = next(gens)
        elif t == "ChameleonVideoTryOnKeyframes":
            i["segment_chunks"] = 2
        elif t == "ChameleonTeacherSampler":
            i["frames"], i["steps"] = 9, 4
        elif t == "ChameleonLocalAttention":
            i["local_frames"] = 3
    return p


def _node(prompt: dict, class_type: str) -> str:
    return next(k for k, v in prompt.items() if v["class_type"] == class_type)


@pytest.mark.parametrize("name", OPTION_NAMES)
def test_option_ui_workflow_has_no_missing_nodes_and_is_listed(server, name):  # noqa: F811
    info = server.get("/object_info")
    ui = json.loads((REPO / "workflows" / f"{name}.json").read_text())
    missing = sorted({n["type"] for n in ui["nodes"]} - set(info) - {"MarkdownNote", "Note"})  # UI-only notes
    assert not missing, f"{name}: nodes missing in ComfyUI: {missing}"
    assert name in server.get("/workflow_templates").get("comfyui-fashionchameleon", [])


@pytest.mark.parametrize("name", OPTION_NAMES)
def test_option_workflow_runs_and_writes_a_video(server, name):  # noqa: F811
    history = server.run(tiny_options(name))
    assert history["status"]["status_str"] == "success", _error(history)
    videos = server.video_files(history)
    assert videos and all(v.exists() and v.stat().st_size > 0 and v.suffix == ".mp4" for v in videos), videos


def _expect_error(server, prompt, *fragments):  # noqa: F811
    history = server.run(prompt)
    assert history["status"]["status_str"] == "error", "the prompt should have failed"
    message = _error(history)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_bad_option_inputs_name_node_input_value_and_fix(server):  # noqa: F811
    # A mask of another size than the video.
    bad = tiny_options("video_tryon")
    bad[_node(bad, "SolidMask")]["inputs"]["width"] = SIZE * 2
    _expect_error(server, bad, "ChameleonVideoTryOn", "'mask'", f"{SIZE * 2}x{SIZE}", "Fix:")
    # Asking for more frames than the source video holds (21 frames = 6 latent frames; 9 + 24 after a switch that
    # starts a new clip needs 12).
    bad = tiny_options("video_tryon")
    gen2 = sorted((k for k, v in bad.items() if v["class_type"] == "ChameleonStreamGenerate"), key=int)[1]
    bad[gen2]["inputs"]["frames"] = 24
    _expect_error(server, bad, "ChameleonStreamGenerate", "'frames'", "24", "longer video", "Fix:")
    # An explicit weighting schedule whose length is not the sampler's steps.
    bad = tiny_options("condition_weighting_teacher")
    bad[_node(bad, "ChameleonConditionWeighting")]["inputs"]["schedule"] = "-2, -1"
    _expect_error(server, bad, "ChameleonTeacherSampler", "'steps'", "2 values", "Fix:")
    bad[_node(bad, "ChameleonConditionWeighting")]["inputs"]["schedule"] = "-2, x"
    _expect_error(server, bad, "ChameleonConditionWeighting", "'schedule'", "Fix:")
    # A keyframe try-on on a stream that already generated frames.
    bad = tiny_options("video_tryon_keyframes")
    start = _node(bad, "ChameleonStreamStart")
    bad["gen0"] = {"class_type": "ChameleonStreamGenerate", "inputs": {"stream": [start, 0], "frames": 9,
                                                                   "steps": 0}}
    bad[_node(bad, "ChameleonVideoTryOnKeyframes")]["inputs"]["stream"] = ["gen0", 0]
    _expect_error(server, bad, "ChameleonVideoTryOnKeyframes", "'stream'", "fresh stream", "Fix:")


def test_tryon_with_a_zero_mask_returns_the_source_latents(server):  # noqa: F811
    """Mask value 0 keeps the whole video: the segment's latents are the VAEEncode latents, bit for bit."""
    import torch  # the test process's torch reads the latents ComfyUI saved
    from safetensors.torch import load_file

    p = tiny_options("video_tryon")
    p[_node(p, "SolidMask")]["inputs"]["value"] = 0.0
    gen = min((k for k, v in p.items() if v["class_type"] == "ChameleonStreamGenerate"), key=int)
    enc = _node(p, "VAEEncode")
    p["save_src"] = {"class_type": "SaveLatent", "inputs": {"samples": [enc, 0], "filename_prefix": "opt/src"}}
    p["save_seg"] = {"class_type": "SaveLatent", "inputs": {"samples": [gen, 1], "filename_prefix": "opt/seg"}}
    history = server.run(p)
    assert history["status"]["status_str"] == "success", _error(history)
    files = {}
    for key in ("save_src", "save_seg"):
        item = history["outputs"][key]["latents"][0]
        files[key] = load_file(str(server.base / "output" / item["subfolder"] / item["filename"]))["latent_tensor"]
    src, seg = files["save_src"], files["save_seg"]
    assert seg.shape[2] == 3 and src.shape[2] == 6
    torch.testing.assert_close(seg.float(), src[:, :, :3].float(), atol=1e-5, rtol=1e-5)
