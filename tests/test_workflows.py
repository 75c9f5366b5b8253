"""The example workflows: every UI file agrees with its API twin, and uses only this pack's nodes or core nodes.

The UI -> API conversion here is written independently of the one that produced the twins (comfy-cli's, in
``python -m chameleon_core.tools.workflows``). Node schemas come from ``tests/data/object_info.json``, a snapshot
of a real ComfyUI's ``/object_info`` with this pack loaded; the integration test re-checks against a live server.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chameleon_core.frames import whole_chunk_segments
from chameleon_core.tools import demo_models, workflow_layout

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
NAMES = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
"""Every shipped workflow (the checks below apply to any workflow added later)."""
UI_ONLY = {"MarkdownNote", "Note"}
"""Frontend-only node types (not in /object_info, not in the API twin)."""
OBJECT_INFO = json.loads((REPO / "tests" / "data" / "object_info.json").read_text())
OURS = {k for k, v in OBJECT_INFO.items() if v["python_module"].startswith("custom_nodes.")}
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
        if node.get("mode", 0) != 0 or node["type"] in UI_ONLY:
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


def test_every_workflow_has_a_ui_file_an_api_twin_and_a_thumbnail():
    assert {"demo", "demo_live", "demo_switch_chain", "single_garment_stream", "garment_switch_chain",
            "teacher_quality", "long_video", "live_preview_stream", "live_session"} <= set(NAMES)
    assert sorted(p.stem for p in (WORKFLOWS / "api").glob("*.json")) == sorted(NAMES)
    # ComfyUI's template browser shows <name>.jpg beside a custom node pack's <name>.json
    assert sorted(p.stem for p in WORKFLOWS.glob("*.jpg")) == sorted(NAMES)


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
        if t in UI_ONLY:
            continue
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
        if node["type"] in UI_ONLY:
            continue
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


# -------------------------------------------------------------------------------------------------------------------
# Graphs that read at a glance, and run in one pass
# -------------------------------------------------------------------------------------------------------------------

TITLE_HEIGHT = 30  # litegraph draws the title bar above pos


def _area(node):
    (x, y), (w, h) = node["pos"], node["size"]
    return x, y - TITLE_HEIGHT, x + w, y + h


def _min_size(node):
    """A lower bound of the body height the frontend draws: a socket row is 20 px, a widget 20 px, plus previews."""
    sockets = max(len(node["inputs"]), len(node["outputs"]))
    widgets = len([v for v in node["widgets_values"] if v not in ("fixed", "image")])
    preview = {"LoadImage": 200, "SaveVideo": 200}.get(node["type"], 0)
    return 200, 20 * sockets + 20 * widgets + preview


@pytest.mark.parametrize("name", NAMES)
def test_no_two_nodes_overlap_and_nodes_have_room_for_their_widgets(name):
    ui, _ = _load(name)
    nodes = ui["nodes"]
    for n in nodes:
        w, h = _min_size(n)
        assert n["size"][0] >= w and n["size"][1] >= h, (name, n["id"], n["type"], n["size"], (w, h))
    clashes = []
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            ra, rb = _area(a), _area(b)
            if ra[0] < rb[2] and rb[0] < ra[2] and ra[1] < rb[3] and rb[1] < ra[3]:
                clashes.append((a["id"], a.get("title", a["type"]), b["id"], b.get("title", b["type"])))
    assert not clashes, f"{name}: overlapping nodes {clashes}"


@pytest.mark.parametrize("name", NAMES)
def test_groups_hold_their_nodes_and_do_not_overlap(name):
    ui, _ = _load(name)
    boxes = [g["bounding"] for g in ui["groups"]]
    for i, (x, y, w, h) in enumerate(boxes):
        for x2, y2, w2, h2 in boxes[i + 1 :]:
            assert not (x < x2 + w2 and x2 < x + w and y < y2 + h2 and y2 < y + h), (name, ui["groups"])


@pytest.mark.parametrize("name", NAMES)
def test_every_template_carries_a_note_listing_its_files_folders_and_sources(name):
    ui, _ = _load(name)
    notes = [n for n in ui["nodes"] if n["type"] == "MarkdownNote"]
    assert len(notes) == 1, name
    text = notes[0]["widgets_values"][0]
    files = [(m["name"], m["directory"]) for n in ui["nodes"] for m in n.get("properties", {}).get("models", [])]
    assert files, name
    for file, folder in files:
        assert f"`{folder}/`: `{file}`" in text, (name, file, folder)
    assert "not public" in text
    for n in ui["nodes"]:
        if n["type"] == "LoadImage":
            assert n["widgets_values"][0] in text, (name, n)
            assert n["title"] in ("Person", "First frame") or n["title"].startswith("Garment "), (name, n)


LOADER_FOLDERS = {"ChameleonStudentLoader": "diffusion_models", "ChameleonTeacherLoader": "diffusion_models",
                  "ChameleonTinyDecoderLoader": "vae_approx", "ChameleonVAELoader": "vae",
                  "ChameleonPromptEmbeddings": "prompt_embeddings", "VAELoader": "vae", "CLIPLoader": "text_encoders"}


@pytest.mark.parametrize("name", NAMES)
def test_model_entries_name_the_file_and_the_folder_the_loader_reads(name):
    ui, _ = _load(name)
    for n in ui["nodes"]:
        if n["type"] not in LOADER_FOLDERS:
            continue
        models = n["properties"]["models"]
        assert models[0]["name"] == n["widgets_values"][0], (name, n)
        assert models[0]["directory"] == LOADER_FOLDERS[n["type"]], (name, n)
        # a student loader also lists the LoRA it merges (its lora_name widget), from models/loras
        assert [(m["name"], m["directory"]) for m in models[1:]] == (
            [(n["widgets_values"][3], "loras")] if n["type"] == "ChameleonStudentLoader"
            and n["widgets_values"][3] != "none" else []), (name, n)
        for m in models:  # the frontend's workflow schema requires a url on every model entry
            assert m["url"].startswith("https://"), m
            public = m["name"] in workflow_layout.MODEL_URLS or m["name"].startswith(workflow_layout.DEMO_FILES)
            assert m["url"].endswith(m["name"]) if public else "/" in m["url"], m
            if "fashionchameleon" in m["name"] and not m["name"].startswith(workflow_layout.DEMO_FILES):
                assert m["url"] == workflow_layout.PROJECT_PAGE, m  # not public: the project page


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith(("longlive", "self_forcing", "causvid"))])
def test_public_student_workflows_give_every_file_a_download_address(name):
    """The public students' workflows: every model entry has a url, and the note names the published file."""
    ui, _ = _load(name)
    entries = [m for n in ui["nodes"] for m in n.get("properties", {}).get("models", [])]
    assert entries and all(m.get("url", "").startswith("https://") for m in entries), (name, entries)
    note = next(n for n in ui["nodes"] if n["type"] == "MarkdownNote")["widgets_values"][0]
    student = next(n for n in ui["nodes"] if n["type"] == "ChameleonStudentLoader")
    assert student["widgets_values"][2] == ("causvid" if name.startswith("causvid") else "auto")
    assert student["properties"]["models"][0]["url"] in note


@pytest.mark.parametrize("name", NAMES)
def test_frame_counts_need_no_rounding(name):
    """Every Generate asks for a frame count that is whole chunks: what it asks is what it gets."""
    _, api = _load(name)
    for node in api.values():
        if node["class_type"] != "ChameleonStreamGenerate":
            continue
        upstream, first, new_clip, before_generate = node["inputs"]["stream"][0], True, False, True
        while api[upstream]["class_type"] != "ChameleonStreamStart":  # a later segment if a Generate is upstream
            kind, inputs = api[upstream]["class_type"], api[upstream]["inputs"]
            if kind == "ChameleonStreamGenerate":
                first, before_generate = False, False
            elif kind == "ChameleonGarmentSwitch" and before_generate:
                # a switch that withdraws every video frame starts a new clip: its first latent frame is not shown
                new_clip = new_clip or (inputs.get("withdraw", True) and inputs.get("withdraw_sink", True))
            upstream = inputs["stream"][0]
        chunk = api[upstream]["inputs"]["chunk_frames"]
        frames = node["inputs"]["frames"]
        if first:
            assert (frames - 1) % 4 == 0 and ((frames - 1) // 4 + 1) % chunk == 0, (name, frames)
        elif new_clip:
            assert (frames + 4) % (4 * chunk) == 0, (name, frames)
        else:
            assert frames % (4 * chunk) == 0, (name, frames)


def test_any_spec_gets_a_layout_without_overlaps_a_note_and_model_entries():
    """The conventions apply to a spec with no extras and careless positions (all nodes at one point): the
    generator's layout separates them, derives the Note and the model entries from the loader nodes."""
    from chameleon_core.tools import workflows

    spec = {k: (t, w, links, (0, 0)) for k, (t, w, links, _) in workflows.garment_switch_chain().items()}
    ui = workflows.to_ui(spec, OBJECT_INFO)
    assert not [(a["id"], b["id"]) for i, a in enumerate(ui["nodes"]) for b in ui["nodes"][i + 1 :]
                if _overlap(_area(a), _area(b))]
    note = next(n for n in ui["nodes"] if n["type"] == "MarkdownNote")["widgets_values"][0]
    assert "`diffusion_models/`: `fashionchameleon_student_wan2.2_ti2v_5b.safetensors`, not public" in note
    assert "`vae/`: `wan2.2_vae.safetensors`, https://huggingface.co/" in note
    titles = sorted(n.get("title", "") for n in ui["nodes"] if n["type"] == "LoadImage")
    assert titles == ["Garment 1", "Garment 2", "Garment 3", "Person"]


def _overlap(ra, rb):
    return ra[0] < rb[2] and rb[0] < ra[2] and ra[1] < rb[3] and rb[1] < ra[3]


# -------------------------------------------------------------------------------------------------------------------
# The demo templates: the shipped files, the demo constants, and what a user sees on load
# -------------------------------------------------------------------------------------------------------------------

DEMO_NAMES = ["demo", "demo_live", "demo_switch_chain"]


@pytest.mark.parametrize("name", DEMO_NAMES)
def test_demo_templates_load_only_the_files_the_pack_ships(name):
    ui, api = _load(name)
    shipped = demo_models.shipped_files()
    for n in ui["nodes"]:
        for m in n.get("properties", {}).get("models", []):
            assert (demo_models.PACK_DEMO / "models" / m["directory"] / m["name"]).is_file(), m
    images = [v["inputs"]["image"] for v in api.values() if v["class_type"] == "LoadImage"]
    assert images and all(i in demo_models.IMAGES and shipped[i].is_file() for i in images), images
    assert not {"CLIPLoader", "VAELoader", "ChameleonTinyDecoderLoader"} & {v["class_type"] for v in api.values()}
    conditions = next(v["inputs"] for v in api.values() if v["class_type"] == "ChameleonConditions")
    assert (conditions["width"], conditions["height"]) == (demo_models.DEMO_WIDTH, demo_models.DEMO_HEIGHT)


def _generates(api: dict) -> list[int]:
    return [v["inputs"]["frames"] for _, v in sorted(api.items(), key=lambda kv: int(kv[0]))
            if v["class_type"] == "ChameleonStreamGenerate"]


def test_demo_frame_counts_and_switches_come_from_the_demo_constants():
    _, api = _load("demo")
    assert _generates(api) == [demo_models.DEMO_FRAMES]
    _, api = _load("demo_switch_chain")
    frames = _generates(api)
    assert sum(frames) == demo_models.DEMO_CHAIN_FRAMES
    assert [sum(frames[:i]) for i in range(1, len(frames))] == list(demo_models.DEMO_SWITCH_FRAMES)
    assert sum(v["class_type"] == "ChameleonGarmentSwitch" for v in api.values()) == len(demo_models.DEMO_SWITCH_FRAMES)
    _, api = _load("demo_live")
    live = next(v["inputs"] for v in api.values() if v["class_type"] == "ChameleonLiveStream")
    assert live["max_frames"] == demo_models.DEMO_LIVE_FRAMES


def test_changing_the_demo_constants_and_regenerating_updates_the_demo_templates(monkeypatch):
    """What the lead does with trained demo files: new constants, regenerate; nothing is hard-coded in the specs."""
    import importlib

    from chameleon_core.tools import workflows

    monkeypatch.setattr(demo_models, "DEMO_WIDTH", 96)
    monkeypatch.setattr(demo_models, "DEMO_HEIGHT", 160)
    monkeypatch.setattr(demo_models, "DEMO_FRAMES", 57)
    monkeypatch.setattr(demo_models, "DEMO_CHAIN_FRAMES", 53)
    monkeypatch.setattr(demo_models, "DEMO_SWITCH_FRAMES", (33,))
    monkeypatch.setattr(demo_models, "DEMO_LIVE_FRAMES", 93)
    try:
        importlib.reload(workflows)
        chain = workflows.to_ui(workflows.demo_switch_chain(), OBJECT_INFO, workflows.EXTRAS["demo_switch_chain"])
        live = workflows.to_ui(workflows.demo_live(), OBJECT_INFO, workflows.EXTRAS["demo_live"])
    finally:
        monkeypatch.undo()
        importlib.reload(workflows)
    gens = [n["widgets_values"][0] for n in chain["nodes"] if n["type"] == "ChameleonStreamGenerate"]
    assert gens == [33, 20]
    assert sum(n["type"] == "ChameleonGarmentSwitch" for n in chain["nodes"]) == 1
    conditions = next(n for n in chain["nodes"] if n["type"] == "ChameleonConditions")
    assert conditions["widgets_values"] == [96, 160]
    assert "53 frames" in chain["extra"]["info"]["description"] and "at frames 33" in chain["extra"]["info"]["description"]
    assert [g["title"] for g in chain["groups"]][-3:] == ["Garment 1: frames 0-32", "Garment 2 from frame 33",
                                                          "Decode and save"]
    live_node = next(n for n in live["nodes"] if n["type"] == "ChameleonLiveStream")
    assert 93 in live_node["widgets_values"]


def test_demo_constants_that_are_not_whole_chunks_are_refused_with_the_fix():
    assert whole_chunk_segments(69, (21, 45), 3) == [21, 24, 24]
    with pytest.raises(ValueError, match=r"segment 2 has 25 video frames; .* needs 12 \+ a multiple of 12 \(e.g. 24\)"):
        whole_chunk_segments(70, (45,), 3)
    with pytest.raises(ValueError, match=r"segment 1 has 20 video frames; .* needs 9 \+ a multiple of 12 \(e.g. 21\)"):
        whole_chunk_segments(44, (20,), 3)
    with pytest.raises(ValueError, match="increase"):
        whole_chunk_segments(69, (45, 21), 3)


@pytest.mark.parametrize("name", NAMES)
def test_the_shipped_templates_are_what_the_generator_makes(name):
    """The JSON files are regenerated from the specs and the demo constants (same schemas: the snapshot), so a
    changed constant or spec without a regenerated file fails here."""
    from chameleon_core.tools import workflows

    ui, _ = _load(name)
    assert workflows.to_ui(workflows.WORKFLOWS[name](), OBJECT_INFO, workflows.EXTRAS.get(name, {})) == ui, (
        f"{name}.json is stale: run python -m chameleon_core.tools.workflows --server URL")


@pytest.mark.parametrize("name", NAMES)
def test_every_template_card_has_a_one_line_summary_that_is_not_its_name(name):
    ui, _ = _load(name)
    summary = ui["extra"]["info"]["description"]
    assert summary and "\n" not in summary and len(summary) <= 160, summary
    assert summary.lower().replace(" ", "_") != name and len(summary.split()) >= 6, summary
    note = next(n for n in ui["nodes"] if n["type"] == "MarkdownNote")["widgets_values"][0]
    assert summary in note


@pytest.mark.parametrize("name", NAMES)
def test_group_titles_fit_their_groups_at_the_frontends_font(name):
    ui, _ = _load(name)
    for g in ui["groups"]:
        width = workflow_layout.group_title_width(g["title"], g["font_size"])
        assert width <= g["bounding"][2], (name, g["title"], width, g["bounding"])


def test_the_title_width_estimate_can_tell_a_long_title():
    assert workflow_layout.group_title_width("Demo models (random weights: the frames are noise)", 24) > 380
    assert workflow_layout.group_title_width("Demo models", 24) < 200
    assert workflow_layout.group_title_width("WWW") > workflow_layout.group_title_width("iii") * 3


@pytest.mark.parametrize("name", NAMES)
def test_the_note_is_in_view_when_a_template_opens(name):
    """``extra.ds`` puts the Note's top-left corner on screen at a zoom where the frontend draws its text."""
    ui, _ = _load(name)
    note = next(n for n in ui["nodes"] if n["type"] == "MarkdownNote")
    ds = ui["extra"]["ds"]
    assert ds["scale"] >= 8 / 14  # the frontend hides DOM text below font 8 px at its 14 px node font
    x = (note["pos"][0] + ds["offset"][0]) * ds["scale"]
    y = (note["pos"][1] - TITLE_HEIGHT + ds["offset"][1]) * ds["scale"]
    assert 0 < x < 200 and 0 < y < 200, (x, y)
    assert all(n["pos"][1] > note["pos"][1] + note["size"][1] for n in ui["nodes"] if n is not note)
