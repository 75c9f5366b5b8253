"""The example workflows: every UI file agrees with its API twin, and uses only this pack's nodes or core nodes.

The UI -> API conversion here is written independently of the one that produced the twins (comfy-cli's, in
``python -m chameleon_core.tools.workflows``). Node schemas come from ``tests/data/object_info.json``, a snapshot
of a real ComfyUI's ``/object_info`` with this pack loaded; the integration test re-checks against a live server.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
NAMES = ["single_garment_stream", "garment_switch_chain", "teacher_quality", "long_video", "live_preview_stream",
         "live_session", "native_model_stream"]
NAMES += ["video_tryon", "video_tryon_keyframes", "motion_transfer", "condition_weighting_stream",  # issue 16
          "condition_weighting_teacher", "local_attention_stream"]
OBJECT_INFO = json.loads((REPO / "tests" / "data" / "object_info.json").read_text())
OURS = {"ChameleonTeacherLoader", "ChameleonStudentLoader", "ChameleonConditions", "ChameleonTeacherSampler",
        "ChameleonStreamStart", "ChameleonStreamGenerate", "ChameleonGarmentSwitch", "ChameleonPromptSwitch",
        "ChameleonStreamDecode", "ChameleonTinyDecoderLoader", "ChameleonLiveStream", "ChameleonNativeModel"}
OURS |= {"ChameleonVideoTryOn", "ChameleonVideoTryOnKeyframes", "ChameleonMotionTransfer", "ChameleonConditionWeighting",
         "ChameleonLocalAttention"}
CORE_MODULES = ("nodes", "comfy_extras.")
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _ordered_inputs(info):
    for section in ("required", "optional"):
        for name in info.get("input_order", {}).get(section, []):
            yield name, info["input"][section][name]


def _is_widget(spec):
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def ui_to_api(ui: dict) -> dict:
    links = {link[0]: link for link in ui["links"]}
    out = {}
    for node in ui["nodes"]:
        if node.get("mode", 0) != 0:
            continue
        info = OBJECT_INFO[node["type"]]
        values = list(node["widgets_values"])
        inputs = {}
        for name, spec in _ordered_inputs(info):
            if not _is_widget(spec):
                continue
            opts = spec[1] if len(spec) > 1 else {}
            inputs[name] = values.pop(0)
            if opts.get("control_after_generate"):
                assert values.pop(0) in ("fixed", "increment", "decrement", "randomize")
            if opts.get("image_upload"):
                assert values.pop(0) == "image"
        assert values == [], f"node {node['id']} ({node['type']}) has extra widget values {values}"
        for slot in node["inputs"]:
            if slot.get("link") is not None:
                link = links[slot["link"]]
                inputs[slot["name"]] = [str(link[1]), link[2]]
        out[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return out


def _load(name):
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    return ui, api


def test_every_workflow_has_a_ui_file_and_an_api_twin():
    assert sorted(p.stem for p in WORKFLOWS.glob("*.json")) == sorted(NAMES)
    assert sorted(p.stem for p in (WORKFLOWS / "api").glob("*.json")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_ui_and_api_twin_agree(name):
    ui, api = _load(name)
    stripped = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}
    assert ui_to_api(ui) == stripped


@pytest.mark.parametrize("name", NAMES)
def test_only_this_pack_and_core_nodes(name):
    ui, _ = _load(name)
    for node in ui["nodes"]:
        t = node["type"]
        module = OBJECT_INFO[t]["python_module"]
        assert t in OURS or module == "nodes" or module.startswith(CORE_MODULES), (t, module)
        assert (t in OURS) == module.startswith("custom_nodes."), (t, module)


@pytest.mark.parametrize("name", NAMES)
def test_links_connect_matching_socket_types(name):
    ui, _ = _load(name)
    nodes = {n["id"]: n for n in ui["nodes"]}
    for link_id, src, src_slot, dst, dst_slot, kind in ui["links"]:
        out_type = OBJECT_INFO[nodes[src]["type"]]["output"][src_slot]
        target = nodes[dst]["inputs"][dst_slot]
        assert kind == out_type == target["type"], (name, link_id, kind, out_type, target)
        assert target["link"] == link_id and link_id in nodes[src]["outputs"][src_slot]["links"]
    for node in ui["nodes"]:  # every required socket is connected
        required = OBJECT_INFO[node["type"]]["input"]["required"]
        for slot in node["inputs"]:
            if slot["name"] in required:
                assert slot["link"] is not None, (name, node["type"], slot["name"])


def test_switch_chain_has_three_garments_and_two_switches_and_long_video_is_long():
    ui, api = _load("garment_switch_chain")
    types = [n["class_type"] for n in api.values()]
    assert types.count("ChameleonGarmentSwitch") == 2
    assert types.count("LoadImage") == 4  # reference + three garments
    _, api = _load("long_video")
    frames = sum(n["inputs"]["frames"] for n in api.values() if n["class_type"] == "ChameleonStreamGenerate")
    assert frames > 4 * 81
