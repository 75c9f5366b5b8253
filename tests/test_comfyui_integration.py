"""Integration with a real ComfyUI: set ``COMFYUI_DIR`` to a ComfyUI checkout (and ``COMFYUI_PYTHON`` to its
interpreter if it is not ``$COMFYUI_DIR/.venv/bin/python``).

The test writes tiny random checkpoints into a temporary base directory
(``python -m chameleon_core.tools.tiny_checkpoints``), starts ComfyUI on CPU with this pack through
``tests/comfyui_launcher.py``, checks ``/object_info``, and runs every API-format workflow at tiny size through
``POST /prompt``; a garment-switch chain through the nodes is compared frame by frame with a direct core ``Session``
run on the same files. A second server (``demo_server``) is a plain, unpatched ``main.py`` with no flags but the
test's own (port, base directory, CPU; previews stay off, ComfyUI's default) and nothing in its folders but this pack:
the pack's shipped demo files are found with no command, the demo templates run there, every template opens in the
frontend with no alert, and the live widget shows frames and lands a switch. Without ``COMFYUI_DIR`` it is
skipped. ``COMFYUI_TEST_PORT`` picks the first server's port (the demo server takes the next one); by default free
ports are used.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(not COMFYUI_DIR, reason="COMFYUI_DIR is not set: point it at a ComfyUI checkout to run the "
                                               "real-ComfyUI integration test"),
]
NAMES = sorted(p.stem for p in (REPO / "workflows").glob("*.json"))
"""Every shipped workflow."""
RUN_ELSEWHERE = {
    **{name: "test_demo_templates_run_in_a_plain_comfyui_with_no_command (demo_server)"
       for name in ("demo", "demo_live", "demo_switch_chain")},
    "native_model_stream": "tests/test_comfyui_native.py (it writes the tiny LoRA the workflow loads)",
    **{name: "tests/test_comfyui_options.py (source video sizes and frame counts at tiny size)" for name in (
        "video_tryon", "video_tryon_keyframes", "motion_transfer", "condition_weighting_stream",
        "condition_weighting_teacher", "local_attention_stream")},
    **{name: "tests/test_comfyui_profiles.py (the public students' files at tiny size)" for name in NAMES
       if name.startswith(("longlive", "self_forcing", "causvid"))},
}
"""Workflows another test runs end to end, and where."""
TINY_NAMES = [n for n in NAMES if n not in RUN_ELSEWHERE]
"""The workflows that run here on the patched server's tiny full-architecture files."""
SIZE = 64  # pixels: 4x4 latents, 2x2 tokens per frame
TINY_DECODER = "chameleon_tiny_taew2_2.safetensors"

EXPECTED_INPUTS = {
    "ChameleonTeacherLoader": ["ckpt_name", "weight_dtype"],
    "ChameleonStudentLoader": ["ckpt_name", "weight_dtype", "profile", "lora_name"],
    "ChameleonTinyDecoderLoader": ["decoder_name", "weight_dtype"],
    "ChameleonConditions": ["vae", "reference", "garment", "width", "height"],
    "ChameleonTeacherSampler": ["teacher", "positive", "negative", "conditions", "frames", "steps", "cfg", "shift",
                                "seed", "sampler"],
    "ChameleonStreamStart": ["student", "positive", "conditions", "seed", "steps", "chunk_frames", "cache_frames",
                             "sink_chunks"],
    "ChameleonStreamGenerate": ["stream", "frames", "steps", "decoder"],
    "ChameleonGarmentSwitch": ["stream", "vae", "garment", "refresh", "withdraw", "disentangle", "withdraw_sink"],
    "ChameleonPromptSwitch": ["stream", "positive", "new_shot"],
    "ChameleonVideoSize": ["width", "height", "vae", "image"],
    "ChameleonStreamDecode": ["vae", "segment_1", "chunk_frames", "decoder"] + [f"segment_{i}" for i in range(2, 9)],
    "ChameleonSegmentJoin": ["first", "second"],
    "ChameleonVAELoader": ["vae_name"],
    "ChameleonPromptEmbeddings": ["embeddings_name"],
    "ChameleonLiveStream": ["student", "positive", "conditions", "vae", "seed", "steps", "chunk_frames", "cache_frames",
                            "sink_chunks", "max_frames", "decoder", "clip"],
}


def _free_port(offset: int = 0) -> int:
    """``$COMFYUI_TEST_PORT`` (+ ``offset``) when set, else a free port."""
    if os.environ.get("COMFYUI_TEST_PORT"):
        return int(os.environ["COMFYUI_TEST_PORT"]) + offset
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, url: str, base: Path, log: Path) -> None:
        self.url, self.base, self.log = url, base, log

    def get(self, path: str):
        return json.load(urllib.request.urlopen(self.url + path, timeout=60))

    def post(self, path: str, body: dict):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                text = r.read()
                return json.loads(text) if text else {}
        except urllib.error.HTTPError as e:
            return {"http_error": e.code, **json.loads(e.read() or b"{}")}

    def run(self, prompt: dict, timeout: float = 600) -> dict:
        """Queue ``prompt`` and wait for its history entry."""
        queued = self.post("/prompt", {"prompt": prompt})
        assert "prompt_id" in queued, f"prompt rejected: {json.dumps(queued)[:2000]}"
        pid = queued["prompt_id"]
        start = time.time()
        while time.time() - start < timeout:
            hist = self.get(f"/history/{pid}")
            if pid in hist and hist[pid].get("status", {}).get("completed") is not None:
                return hist[pid]
            time.sleep(0.5)
        raise TimeoutError(f"prompt {pid} did not finish in {timeout} s; log: {self.log}")

    def video_files(self, history: dict) -> list[Path]:
        files = []
        for out in history["outputs"].values():
            for item in out.get("images", []) + out.get("videos", []):
                files.append(self.base / "output" / item.get("subfolder", "") / item["filename"])
        return files


def _comfy_python() -> str:
    python = os.environ.get("COMFYUI_PYTHON") or str(Path(COMFYUI_DIR) / ".venv" / "bin" / "python")
    return python if Path(python).exists() else sys.executable


PREVIEWS = ["--preview-method", "latent2rgb"]
"""The tiny server runs with ComfyUI's previews on (the live node must not send any); the demo server without."""


def _start(python: str, argv: list[str], base: Path, port: int, env: dict, flags: list[str] = PREVIEWS):
    """Start ComfyUI with ``argv`` (a launcher or main.py) on ``port`` in ``base``; returns (process, Server)."""
    log = base / "comfyui.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [python, *argv, "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
             "--database-url", "sqlite:///:memory:", "--disable-auto-launch", *flags],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=COMFYUI_DIR,
        )
    srv = Server(f"http://127.0.0.1:{port}", base, log)
    deadline = time.time() + 300
    while True:
        try:
            srv.get("/system_stats")
            return proc, srv
        except (urllib.error.URLError, ConnectionError, OSError):
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"ComfyUI did not start; log:\n{log.read_text()[-4000:]}") from None
            time.sleep(1)


def _stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def _link_pack(base: Path) -> None:
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "comfyui-fashionchameleon").symlink_to(REPO, target_is_directory=True)


def _base_with(tmp_path_factory, name: str, tool: str) -> tuple[str, Path]:
    """A temporary ComfyUI base directory with this pack linked in and the files ``python -m chameleon_core.tools.
    <tool>`` writes (models and input images); returns (ComfyUI's python, the base)."""
    python = _comfy_python()
    base = tmp_path_factory.mktemp(name)
    subprocess.run([python, "-m", f"chameleon_core.tools.{tool}", "--models", str(base / "models"),
                    "--input", str(base / "input")], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                   check=True, capture_output=True)
    _link_pack(base)
    return python, base


def start_tiny_server(python: str, base: Path, port: int):
    """ComfyUI through ``tests/comfyui_launcher.py`` (the tiny umT5 / VAE sizes of ``base``); (process, Server)."""
    env = {**os.environ, "COMFYUI_DIR": COMFYUI_DIR, "CHAMELEON_TINY_SIZES": str(base / "models" / "tiny_sizes.json")}
    env.pop("PYTHONPATH", None)
    return _start(python, [str(REPO / "tests" / "comfyui_launcher.py")], base, port, env)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    python, base = _base_with(tmp_path_factory, "comfyui", "tiny_checkpoints")
    proc, srv = start_tiny_server(python, base, _free_port())
    yield srv
    _stop(proc)


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    """A plain ComfyUI (its own ``main.py``, no launcher patches, previews off as by default) with nothing in its
    folders but this pack: what a user has after the README's install."""
    base = tmp_path_factory.mktemp("comfyui_demo")
    _link_pack(base)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc, srv = _start(_comfy_python(), [str(Path(COMFYUI_DIR) / "main.py")], base, _free_port(1), env, flags=[])
    yield srv
    _stop(proc)


def tiny(prompt: dict) -> dict:
    """An API workflow pointed at the tiny checkpoints and resolution (frame counts and steps are kept)."""
    p = copy.deepcopy(prompt)
    for node in p.values():
        t, i = node["class_type"], node["inputs"]
        if t == "ChameleonStudentLoader":
            i["ckpt_name"] = "chameleon_tiny_student.safetensors"
        elif t == "ChameleonTeacherLoader":
            i["ckpt_name"] = "chameleon_tiny_teacher.safetensors"
        elif t == "VAELoader":
            i["vae_name"] = "chameleon_tiny_wan2.2_vae.safetensors"
        elif t == "CLIPLoader":
            i["clip_name"] = "chameleon_tiny_umt5.safetensors"
        elif t == "ChameleonTinyDecoderLoader":
            i["decoder_name"] = TINY_DECODER
        elif t == "ChameleonConditions":
            i["width"] = i["height"] = SIZE
    return p


def demo_quick(prompt: dict) -> dict:
    """A demo template at 64x64 with the shortest segments (one chunk each) and a short live session: what CI runs."""
    p = copy.deepcopy(prompt)
    gens = sorted((k for k, v in p.items() if v["class_type"] == "ChameleonStreamGenerate"), key=int)
    for k in gens:
        p[k]["inputs"]["frames"] = 9 if k == gens[0] else 12
    for node in p.values():
        if node["class_type"] == "ChameleonConditions":
            node["inputs"]["width"] = node["inputs"]["height"] = SIZE
        if node["class_type"] == "ChameleonLiveStream":
            node["inputs"]["max_frames"] = 21
    return p


def load_api(name: str) -> dict:
    return json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text())


def _cached_nodes(history: dict) -> set[str]:
    for kind, data in history["status"]["messages"]:
        if kind == "execution_cached":
            return set(data["nodes"])
    return set()


def _error(history: dict) -> str:
    for kind, data in history["status"]["messages"]:
        if kind == "execution_error":
            return f"{data.get('node_type')}: {data.get('exception_message')}"
    return ""


def test_object_info_lists_every_node_with_its_inputs(server):
    info = server.get("/object_info")
    for node, inputs in EXPECTED_INPUTS.items():
        assert node in info, f"{node} missing from /object_info"
        listed = list(info[node]["input"].get("required", {})) + list(info[node]["input"].get("optional", {}))
        assert sorted(listed) == sorted(inputs), (node, listed)
        assert info[node]["category"].startswith("FashionChameleon")
        for name in listed:
            spec = (info[node]["input"].get("required", {}) | info[node]["input"].get("optional", {}))[name]
            assert spec[1].get("tooltip"), f"{node}.{name} has no tooltip"


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_has_no_missing_nodes(server, name):
    info = server.get("/object_info")
    ui = json.loads((REPO / "workflows" / f"{name}.json").read_text())
    missing = sorted({n["type"] for n in ui["nodes"]} - set(info) - {"MarkdownNote", "Note"})  # UI-only notes
    assert not missing, f"{name}: nodes missing in ComfyUI: {missing}"
    templates = server.get("/workflow_templates")
    assert name in templates.get("comfyui-fashionchameleon", []), templates


def _browser() -> tuple[str, str]:
    """(Chromium, ComfyUI's python) for the browser checks, or skip with what to install."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    python = _comfy_python()
    has_playwright = subprocess.run([python, "-c", "import playwright"], capture_output=True).returncode == 0
    if not chromium or not has_playwright:
        pytest.skip("needs Chromium (apt-get install chromium) and playwright in ComfyUI's Python "
                    "(pip install playwright; no browser download: the system Chromium is used)")
    return chromium, python


def test_every_template_opens_in_the_real_frontend_with_no_alert(demo_server):
    """In a plain ComfyUI with only this pack, the shipped frontend in headless Chromium opens every template as its
    template browser does: no alert, toast or schema error; every node type known; the demo templates find all their
    files (no missing-models dialog); the Note drawn and on screen, its text inside it; group titles narrower than
    their groups as the frontend measures them (and the generator's estimate never below that); no two nodes
    overlapping at the sizes the frontend draws."""
    from chameleon_core.tools import workflow_layout

    chromium, python = _browser()
    out = subprocess.run([python, str(REPO / "tests" / "frontend_check.py"), demo_server.url, chromium, *NAMES],
                         capture_output=True, text=True, timeout=600, cwd=REPO / "tests")
    assert out.returncode == 0, out.stderr[-3000:]
    results = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [r["name"] for r in results] == NAMES
    for r in results:
        assert r["errors"] == [], (r["name"], r["errors"])
        assert r["unknown"] == [] and r["loaded"] == r["nodes"], r
        if r["name"].startswith("demo"):
            assert not r["dialog"] and r["missing_models"] == [], (r["name"], r["missing_models"])
        note = r["note"]
        assert note["shown"] and note["text"], (r["name"], note)
        left, top, right, bottom = note["rect"]
        assert 0 <= left < 400 and 0 <= top < 300 and right <= 1600 and bottom <= 900, (r["name"], note)
        assert note["text_height"] <= note["box_height"], (r["name"], note)
        for g in r["groups"]:
            assert g["title_width"] <= g["width"], (r["name"], g)
            assert workflow_layout.group_title_width(g["title"], g["font_size"]) >= g["title_width"] - 1, g
        # no two nodes overlap, at the sizes the frontend draws (the saved size, or larger where it computes more)
        areas = []
        for g in r["geometry"]:
            w, h = max(g["size"][0], g["computed"][0]), max(g["size"][1], g["computed"][1])
            areas.append((g["id"], g["pos"][0], g["pos"][1] - r["title_height"], g["pos"][0] + w, g["pos"][1] + h))
        clashes = [(a[0], b[0]) for i, a in enumerate(areas) for b in areas[i + 1 :]
                   if a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]]
        assert not clashes, (r["name"], clashes)


def _live_check(python: str, chromium: str, url: str, options: dict) -> dict:
    out = subprocess.run([python, str(REPO / "tests" / "frontend_live_check.py"), url, chromium, json.dumps(options)],
                         capture_output=True, text=True, timeout=900, cwd=REPO / "tests")
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_demo_live_in_a_plain_comfyui_shows_frames_and_a_switch_from_the_widget_lands(demo_server):
    """The issue's first hour: a plain ComfyUI (no flags: previews off), the demo_live template opened from the
    template browser, Run: frames play in the node, a garment picked in the widget lands at the next chunk and its
    frames arrive, Stop ends it; no alert, no ComfyUI preview on the node, the controls on top."""
    chromium, python = _browser()
    result = _live_check(python, chromium, demo_server.url,
                         {"template": "demo_live", "garment": "fashionchameleon_demo_garment2.png"})
    assert result["loaded"]["widget"] and result["loaded"]["errors"] == [] and result["errors"] == [], result
    assert result["has_image"] and result["shown_before_switch"] > 3, result
    assert result["comfy_preview"] == {"imgs": 0, "preview": False} and result["controls_on_top"], result
    garments = [s for s in result["switches"] if s["kind"] == "garment"]
    assert [s["garment"] for s in garments] == ["fashionchameleon_demo_garment2.png"], result
    assert result["frame_chunk_after_switch"] > garments[0]["chunk"], result
    assert result["final"]["status"] == "stopped", result
    assert result["shown"] == result["final"]["frames"], result  # every frame made was shown


def test_live_widget_with_previews_on_and_frames_that_do_not_arrive(server):
    """With ComfyUI's previews on (the tiny server), the live node still sends none of its own (nothing drawn behind
    the widget); when the page gets no frames, the widget says so and why; once frames arrive they show and a switch
    from the widget lands."""
    chromium, python = _browser()
    settings = {
        "ChameleonStudentLoader": {"ckpt_name": "chameleon_tiny_student.safetensors"},
        "VAELoader": {"vae_name": "chameleon_tiny_wan2.2_vae.safetensors"},
        "CLIPLoader": {"clip_name": "chameleon_tiny_umt5.safetensors"},
        "ChameleonTinyDecoderLoader": {"decoder_name": TINY_DECODER},
        "ChameleonConditions": {"width": SIZE, "height": SIZE},
        "ChameleonLiveStream": {"max_frames": 0},
    }
    result = _live_check(python, chromium, server.url, {
        "workflow": str(REPO / "workflows" / "live_session.json"), "settings": settings, "garment": "garment2.png",
        "drop_frames_first": True})
    assert result["received_while_dropped"] == 0, result
    assert "no frames reached this page" in result["message_without_frames"], result
    assert "reload the page" in result["message_without_frames"], result
    assert result["loaded"]["widget"] and result["has_image"] and result["shown_before_switch"] > 3, result
    assert result["message_with_frames"].startswith("streaming"), result
    assert result["comfy_preview"] == {"imgs": 0, "preview": False} and result["controls_on_top"], result
    garments = [s for s in result["switches"] if s["kind"] == "garment"]
    assert [s["garment"] for s in garments] == ["garment2.png"], result
    assert result["frame_chunk_after_switch"] > garments[0]["chunk"], result
    assert result["errors"] == [], result


@pytest.mark.parametrize("name", TINY_NAMES)
def test_api_workflow_runs_and_writes_a_video(server, name):
    history = server.run(tiny(load_api(name)))
    assert history["status"]["status_str"] == "success", _error(history)
    videos = server.video_files(history)
    assert videos and all(v.exists() and v.stat().st_size > 0 and v.suffix == ".mp4" for v in videos), videos


@pytest.mark.parametrize("edit", ["third garment", "third segment length"])
def test_editing_the_third_segment_reuses_the_first_two_and_equals_a_fresh_run(server, edit):
    """The issue's check (change only the third garment), plus a longer third segment: its Generate re-runs on a
    cached stream state that the first run's Generate already consumed, so a node that mutated its input state
    would be caught here."""
    prompt = tiny(load_api("garment_switch_chain"))
    first = server.run(prompt)
    assert first["status"]["status_str"] == "success", _error(first)
    changed = copy.deepcopy(prompt)
    if edit == "third garment":
        third = next(k for k, v in prompt.items()
                     if v["class_type"] == "LoadImage" and v["inputs"]["image"] == "garment3.png")
        changed[third]["inputs"]["image"] = "garment1.png"
    else:
        last_gen = max((k for k, v in prompt.items() if v["class_type"] == "ChameleonStreamGenerate"), key=int)
        changed[last_gen]["inputs"]["frames"] = 60
    # Compare decoded frames losslessly: PyAV's x264 encode is not bit-reproducible from run to run.
    decode = next(k for k, v in changed.items() if v["class_type"] == "ChameleonStreamDecode")
    changed["frames_png"] = {"class_type": "SaveImage", "inputs": {"images": [decode, 0], "filename_prefix": "x"}}
    second = server.run(changed)
    assert second["status"]["status_str"] == "success", _error(second)
    cached = _cached_nodes(second)
    by_type = {}
    for k, v in changed.items():
        by_type.setdefault(v["class_type"], []).append(k)
    gens = sorted(by_type["ChameleonStreamGenerate"], key=int)
    switches = sorted(by_type["ChameleonGarmentSwitch"], key=int)
    assert {gens[0], gens[1], switches[0], *by_type["ChameleonStreamStart"]} <= cached, cached
    assert gens[2] not in cached and (edit != "third garment" or switches[1] not in cached), cached
    # A fresh run (execution cache dropped) of the changed workflow gives the same video bytes.
    server.post("/free", {"free_memory": True, "unload_models": True})
    # ComfyUI's worker applies the flag after the next prompt it executes: run a trivial one first.
    server.run({"d1": {"class_type": "LoadImage", "inputs": {"image": "reference.png"}},
                "d2": {"class_type": "SaveImage", "inputs": {"images": ["d1", 0], "filename_prefix": "flush"}}})
    fresh = server.run(changed)
    assert fresh["status"]["status_str"] == "success", _error(fresh)
    assert not _cached_nodes(fresh) & set(gens), "the fresh run must recompute"
    a, b = _frames(server, second), _frames(server, fresh)
    third = 12 if edit == "third garment" else 18
    # 45 + 44 + 44|60 frames -> 12 + 12 + 12|18 latent frames (60 rounds up to whole chunks: 68 frames); each switch
    # starts a new clip whose first latent frame is not shown
    assert len(a) == len(b) == 4 * (24 + third - 1) + 1 - 2 * 4
    assert a == b, "a cached-and-changed run must equal a fresh run frame for frame"


def _frame_files(server: Server, history: dict) -> list[Path]:
    """The decoded frames a run saved as PNG (its ``frames_png`` SaveImage), in order."""
    items = history["outputs"]["frames_png"]["images"]
    return [server.base / "output" / i["subfolder"] / i["filename"] for i in items]


def _frames(server: Server, history: dict) -> list[bytes]:
    """The decoded frames a run saved as PNG, as raw RGB bytes."""
    from PIL import Image

    return [Image.open(f).tobytes() for f in _frame_files(server, history)]


def test_five_switches_in_one_workflow(server):
    base = tiny(load_api("single_garment_stream"))
    start = next(k for k, v in base.items() if v["class_type"] == "ChameleonStreamStart")
    vae = next(k for k, v in base.items() if v["class_type"] == "VAELoader")
    decode = next(k for k, v in base.items() if v["class_type"] == "ChameleonStreamDecode")
    gen = next(k for k, v in base.items() if v["class_type"] == "ChameleonStreamGenerate")
    base[gen]["inputs"]["frames"] = 21
    prompt, prev, segs = dict(base), gen, [[gen, 1]]
    for i in range(5):
        img, sw, g = f"img{i}", f"sw{i}", f"gen{i}"
        prompt[img] = {"class_type": "LoadImage", "inputs": {"image": f"garment{i % 3 + 1}.png"}}
        prompt[sw] = {"class_type": "ChameleonGarmentSwitch", "inputs": {
            "stream": [prev, 0], "vae": [vae, 0], "garment": [img, 0], "refresh": True, "withdraw": True,
            "disentangle": i % 2 == 0, "withdraw_sink": i != 1}}
        prompt[g] = {"class_type": "ChameleonStreamGenerate", "inputs": {"stream": [sw, 0], "frames": 12,
                                                                          "steps": 2 if i == 3 else 0}}
        prev = g
        segs.append([g, 1])
    for i, seg in enumerate(segs[:8], start=1):
        prompt[decode]["inputs"][f"segment_{i}"] = seg
    assert start in prompt
    history = server.run(prompt)
    assert history["status"]["status_str"] == "success", _error(history)
    assert server.video_files(history)


def _expect_error(server, prompt, *fragments):
    history = server.run(prompt)
    assert history["status"]["status_str"] == "error"
    message = _error(history)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_bad_inputs_name_node_input_value_and_fix(server):
    wf = tiny(load_api("single_garment_stream"))
    cond = next(k for k, v in wf.items() if v["class_type"] == "ChameleonConditions")
    gen = next(k for k, v in wf.items() if v["class_type"] == "ChameleonStreamGenerate")
    bad = copy.deepcopy(wf)
    bad[cond]["inputs"]["width"] = 80
    _expect_error(server, bad, "ChameleonConditions", "'width'", "80", "Fix:")
    bad = copy.deepcopy(wf)
    bad[gen]["inputs"]["frames"] = 5
    _expect_error(server, bad, "ChameleonStreamGenerate", "'frames'", "5", "Fix:")
    bad = copy.deepcopy(wf)
    loader = next(k for k, v in bad.items() if v["class_type"] == "ChameleonStudentLoader")
    bad[loader] = {"class_type": "ChameleonTeacherLoader",
                   "inputs": {"ckpt_name": "chameleon_tiny_teacher.safetensors", "weight_dtype": "default"}}
    _expect_error(server, bad, "ChameleonStreamStart", "'student'", "teacher", "Fix:")
    bad = copy.deepcopy(wf)
    bad[loader]["inputs"]["ckpt_name"] = "chameleon_tiny_teacher.safetensors"
    _expect_error(server, bad, "ChameleonStudentLoader", "'ckpt_name'", "teacher", "Fix:")


def test_faulty_checkpoint_files_fail_the_loader_node_with_the_file_named(server):
    """The fault-injection cases of the core's loaders, through the loader node: truncated, empty, wrong-type,
    non-regular (a FIFO must not hang the server) and NaN-carrying files each end the run with one clear error that
    names the node, the input, the file and the fix."""
    import torch
    from safetensors.torch import load_file, save_file

    folder = server.base / "models" / "diffusion_models"
    good = folder / "chameleon_tiny_student.safetensors"
    data = good.read_bytes()
    (folder / "fault_truncated_student.safetensors").write_bytes(data[: len(data) // 2])
    (folder / "fault_empty_student.safetensors").write_bytes(b"")
    (folder / "fault_text_student.pt").write_text("not a checkpoint\n")
    os.mkfifo(folder / "fault_fifo_student.safetensors")
    tensors = load_file(str(good))
    name = next(k for k in tensors if k.endswith("ffn.0.weight"))
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(folder / "fault_nan_student.safetensors"))
    wf = tiny(load_api("single_garment_stream"))
    loader = next(k for k, v in wf.items() if v["class_type"] == "ChameleonStudentLoader")
    for fault in ("truncated", "empty", "fifo", "nan"):
        bad = copy.deepcopy(wf)
        bad[loader]["inputs"]["ckpt_name"] = f"fault_{fault}_student.safetensors"
        _expect_error(server, bad, "ChameleonStudentLoader", "'ckpt_name'", f"fault_{fault}_student", "Fix:")
    bad = copy.deepcopy(wf)
    bad[loader]["inputs"]["ckpt_name"] = "fault_text_student.pt"
    _expect_error(server, bad, "ChameleonStudentLoader", "'ckpt_name'", "fault_text_student", "Fix:")


def test_node_path_equals_a_direct_core_session(server):
    """StreamStart -> Generate -> GarmentSwitch -> Generate -> Decode through ``POST /prompt`` gives the frames of a
    direct ``chameleon_core.session.Session`` run: same tiny checkpoint files, seed, settings, images and switch,
    with the core's own VAE loaded from the same file (ComfyUI's text encoder supplies the prompt features to both).
    The workflow's frames are 8-bit PNGs (ComfyUI's SaveImage truncates 255 * x), so they may be one level lower."""
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import load_file

    from chameleon_core.checkpoints import load_transformer, load_vae
    from chameleon_core.config import StreamSettings
    from chameleon_core.session import (
        GarmentSwitch,
        Session,
        TimedSwitch,
        encode_condition,
    )
    from chameleon_core.streaming import start_stream

    prompt = tiny(load_api("single_garment_stream"))
    by_type = {v["class_type"]: k for k, v in prompt.items()}
    for drop in ("CreateVideo", "SaveVideo"):
        del prompt[by_type[drop]]
    start, gen, decode, vae = (by_type[t] for t in ("ChameleonStreamStart", "ChameleonStreamGenerate",
                                                    "ChameleonStreamDecode", "VAELoader"))
    prompt[gen]["inputs"]["frames"] = 21  # 6 latent frames: two chunks
    prompt["g2"] = {"class_type": "LoadImage", "inputs": {"image": "garment2.png"}}
    prompt["sw"] = {"class_type": "ChameleonGarmentSwitch", "inputs": {
        "stream": [gen, 0], "vae": [vae, 0], "garment": ["g2", 0], "refresh": True, "withdraw": True,
        "disentangle": True, "withdraw_sink": True}}
    # one chunk after the switch: it starts a new clip, whose first latent frame is not shown (8 frames)
    prompt["gen2"] = {"class_type": "ChameleonStreamGenerate", "inputs": {"stream": ["sw", 0], "frames": 8,
                                                                          "steps": 0}}
    prompt[decode]["inputs"]["segment_2"] = ["gen2", 1]
    prompt["frames_png"] = {"class_type": "SaveImage", "inputs": {"images": [decode, 0], "filename_prefix": "eq"}}
    history = server.run(prompt)
    assert history["status"]["status_str"] == "success", _error(history)
    nodes = np.stack([np.asarray(Image.open(f), dtype=np.float32) for f in _frame_files(server, history)])

    # The direct run: the same files, read by the core.
    models, inputs = server.base / "models", server.base / "input"
    text = prompt[by_type["CLIPTextEncode"]]["inputs"]["text"]
    features = server.base / "prompt.safetensors"
    env = {**os.environ, "COMFYUI_DIR": COMFYUI_DIR, "CHAMELEON_TINY_SIZES": str(models / "tiny_sizes.json")}
    subprocess.run([_comfy_python(), str(REPO / "tests" / "comfyui_launcher.py"), "--encode-prompt",
                    str(models / "text_encoders" / "chameleon_tiny_umt5.safetensors"), text, str(features)],
                   env=env, check=True, capture_output=True, timeout=600)
    model = load_transformer(models / "diffusion_models" / "chameleon_tiny_student.safetensors", dtype=torch.float32)
    core_vae = load_vae(models / "vae" / "chameleon_tiny_wan2.2_vae.safetensors")
    family = model.config.latent

    def image(name: str) -> torch.Tensor:  # as LoadImage reads it: RGB, 0..1, [1, H, W, 3]
        return torch.from_numpy(np.asarray(Image.open(inputs / name).convert("RGB"), dtype=np.float32) / 255)[None]

    cond_in, start_in = prompt[by_type["ChameleonConditions"]]["inputs"], prompt[start]["inputs"]
    conds = [encode_condition(core_vae, family, image(prompt[cond_in[k][0]]["inputs"]["image"]),
                              garment=k == "garment", size=(SIZE, SIZE)) for k in ("reference", "garment")]
    state = start_stream(model, context=load_file(features)["context"], reference=conds[0], garment=conds[1],
                         seed=start_in["seed"], settings=StreamSettings(
                             chunk_frames=start_in["chunk_frames"], cache_frames=start_in["cache_frames"],
                             sink_chunks=start_in["sink_chunks"], steps=start_in["steps"]))
    session = Session(state, chunks=3, codec=core_vae, timeline=[TimedSwitch(2, GarmentSwitch(image("garment2.png")))])
    pixels = torch.cat([chunk.pixels for chunk in session], dim=2)[0]  # [3, F, H, W] in [-1, 1]
    core = ((pixels.permute(1, 2, 3, 0).float() + 1) / 2).clamp(0, 1).numpy() * 255

    assert nodes.shape == core.shape == (4 * 8 + 1 - 4, SIZE, SIZE, 3)
    diff = core - nodes  # SaveImage truncates: 0 <= diff < 1, plus float noise of the two VAE implementations
    assert diff.min() > -0.01 and diff.max() < 1.01, (diff.min(), diff.max())
    # The comparison means something: without the switch the last chunk's frames would be others.
    unswitched = torch.cat([chunk.pixels for chunk in Session(state, chunks=3, codec=core_vae)], dim=2)[0]
    unswitched = ((unswitched.permute(1, 2, 3, 0).float() + 1) / 2).clamp(0, 1).numpy() * 255
    assert np.abs(unswitched[: len(nodes)] - nodes)[-8:].max() > 10


def _tiny_decode_prompt(latent: str, decoder: str) -> dict:
    """LoadLatent -> ChameleonStreamDecode with the tiny decoder -> PNG frames."""
    return {
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "chameleon_tiny_wan2.2_vae.safetensors"}},
        "lat": {"class_type": "LoadLatent", "inputs": {"latent": latent}},
        "tiny": {"class_type": "ChameleonTinyDecoderLoader", "inputs": {"decoder_name": decoder,
                                                                         "weight_dtype": "fp32"}},
        "dec": {"class_type": "ChameleonStreamDecode", "inputs": {"vae": ["vae", 0], "segment_1": ["lat", 0],
                                                                   "chunk_frames": 3, "decoder": ["tiny", 0]}},
        "frames_png": {"class_type": "SaveImage", "inputs": {"images": ["dec", 0], "filename_prefix": "tiny"}},
    }


def _write_latent(server: Server, name: str, latents) -> None:
    """A ComfyUI ``.latent`` file (raw samples, format version 0: LoadLatent applies no scale) in the input folder."""
    import torch
    from safetensors.torch import save_file

    save_file({"latent_tensor": latents.contiguous(), "latent_format_version_0": torch.tensor([])},
              str(server.base / "input" / name))


def test_decode_with_the_tiny_decoder_equals_the_core_decode(server):
    """ChameleonStreamDecode with a tiny decoder from vae_approx gives the frames of the core's ``decode_chunks`` over
    ``load_taehv`` of the same file (8-bit PNGs: SaveImage truncates 255 * x, so they may be one level lower)."""
    import numpy as np
    import torch
    from PIL import Image

    from chameleon_core.decoding import decode_chunks
    from chameleon_core.taehv import load_taehv

    latents = torch.randn(1, 48, 5, 4, 4, generator=torch.Generator().manual_seed(3))  # raw Wan2.2 latents
    _write_latent(server, "tiny_stream.latent", latents)
    history = server.run(_tiny_decode_prompt("tiny_stream.latent", TINY_DECODER))
    assert history["status"]["status_str"] == "success", _error(history)
    nodes = np.stack([np.asarray(Image.open(f), dtype=np.float32) for f in _frame_files(server, history)])
    decoder = load_taehv(server.base / "models" / "vae_approx" / TINY_DECODER)
    pixels = torch.cat(list(decode_chunks(decoder, latents, 3)), dim=2)[0]  # [3, F, H, W] in [-1, 1]
    core = ((pixels.permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1).numpy() * 255
    assert nodes.shape == core.shape == (1 + 4 * 4, SIZE, SIZE, 3)
    diff = core - nodes
    assert diff.min() > -0.01 and diff.max() < 1.01, (diff.min(), diff.max())
    assert core.std() > 1  # the frames are not flat: the comparison means something


def test_bad_tiny_decoder_files_name_node_input_value_and_fix(server):
    """A damaged release-named file fails the loader with the key named; a Wan2.1 decoder on Wan2.2 latents fails the
    decode node on its decoder input."""
    import torch
    from safetensors.torch import load_file, save_file

    from chameleon_core.tools.tiny_checkpoints import write_taehv

    folder = server.base / "models" / "vae_approx"
    sd = load_file(str(folder / TINY_DECODER))
    sd["decoder.3.conv.0.weightx"] = sd.pop("decoder.3.conv.0.weight")
    save_file(sd, str(folder / "taew2_2_renamed.safetensors"))
    (folder / "taew2_2_truncated.safetensors").write_bytes((folder / TINY_DECODER).read_bytes()[:1000])
    write_taehv(folder / "taew2_1_tiny.safetensors", seed=1, latent_channels=16)
    _write_latent(server, "tiny_bad.latent", torch.randn(1, 48, 3, 4, 4))
    _expect_error(server, _tiny_decode_prompt("tiny_bad.latent", "taew2_2_renamed.safetensors"),
                  "ChameleonTinyDecoderLoader", "'decoder_name'", "taew2_2_renamed", "decoder.3.conv.0.weightx", "Fix:")
    _expect_error(server, _tiny_decode_prompt("tiny_bad.latent", "taew2_2_truncated.safetensors"),
                  "ChameleonTinyDecoderLoader", "'decoder_name'", "taew2_2_truncated", "Fix:")
    _expect_error(server, _tiny_decode_prompt("tiny_bad.latent", "taew2_1_tiny.safetensors"),
                  "ChameleonStreamDecode", "'decoder'", "taew2_1_tiny", "wan2.1", "Fix: load taew2_2")


# -------------------------------------------------------------------------------------------------------------------
# Live mode: ChameleonLiveStream + the /chameleon/live routes, driven as the widget drives them
# -------------------------------------------------------------------------------------------------------------------


class _Previews:
    """A websocket client that announces preview metadata and records type-4 previews and JSON events."""

    def __init__(self, server: Server) -> None:
        import threading
        import uuid

        websocket = pytest.importorskip("websocket")  # websocket-client, in ComfyUI's venv
        self.client_id = uuid.uuid4().hex
        self.ws = websocket.create_connection(server.url.replace("http", "ws") + f"/ws?clientId={self.client_id}",
                                              timeout=60)
        self.ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
        self.previews: list[dict] = []
        self.events: list[dict] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        import struct

        while True:
            try:
                msg = self.ws.recv()
            except Exception:  # noqa: BLE001 (closed)
                return
            if isinstance(msg, bytes):
                kind = struct.unpack(">I", msg[:4])[0]
                if kind == 4:
                    n = struct.unpack(">I", msg[4:8])[0]
                    meta = json.loads(msg[8 : 8 + n])
                    self.previews.append({**meta, "bytes": len(msg) - 8 - n})
            elif msg:
                self.events.append(json.loads(msg))

    def close(self) -> None:
        self.ws.close()


def _live_prompt(max_frames: int, clip: bool = True) -> dict:
    base = tiny(load_api("single_garment_stream"))
    keep = {k: v for k, v in base.items() if v["class_type"] in
            ("ChameleonStudentLoader", "VAELoader", "CLIPLoader", "CLIPTextEncode", "LoadImage", "ChameleonConditions")}
    find = {v["class_type"]: k for k, v in keep.items()}
    keep["live"] = {"class_type": "ChameleonLiveStream", "inputs": {
        "student": [find["ChameleonStudentLoader"], 0], "positive": [find["CLIPTextEncode"], 0],
        "conditions": [find["ChameleonConditions"], 0], "vae": [find["VAELoader"], 0], "seed": 7, "steps": 2,
        "chunk_frames": 1, "cache_frames": 8, "sink_chunks": 1, "max_frames": max_frames}}
    if clip:
        keep["live"]["inputs"]["clip"] = [find["CLIPLoader"], 0]
    keep["show"] = {"class_type": "PreviewImage", "inputs": {"images": ["live", 0]}}
    return keep


def _wait(check, timeout: float = 300, what: str = ""):
    start = time.time()
    while time.time() - start < timeout:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    raise TimeoutError(f"waited {timeout} s for {what}")


def _live_session(server: Server, prompt_id: str) -> dict:
    def find():
        for s in server.get("/chameleon/live")["sessions"]:
            if s["prompt_id"] == prompt_id:
                return s
        return None

    return _wait(find, what="the live session to start")


def test_live_session_streams_frames_on_its_own_channel_takes_switches_and_stops(server):
    client = _Previews(server)
    try:
        queued = server.post("/prompt", {"prompt": _live_prompt(0), "client_id": client.client_id})
        pid = queued["prompt_id"]
        live = _live_session(server, pid)
        sid = live["session"]
        assert live["node"] == "live" and live["accepts_prompt"]
        started = _wait(lambda: [e for e in client.events if e["type"] == "chameleon.live.started"],
                        what="the chameleon.live.started event")
        assert started[0]["data"]["session"] == sid

        # bad commands: clear 4xx, the stream goes on
        assert server.post("/chameleon/live/nope/switch", {"garment": "garment2.png"})["http_error"] == 404
        assert server.post(f"/chameleon/live/{sid}/switch", {"garment": "missing.png"})["http_error"] == 400
        assert server.post(f"/chameleon/live/{sid}/switch", {"garment": "../../etc/passwd"})["http_error"] == 400
        assert server.post(f"/chameleon/live/{sid}/switch", {"prompt": "  "})["http_error"] == 400
        assert server.post(f"/chameleon/live/{sid}/switch", {})["http_error"] == 400

        # a garment switch mid-run lands at the next chunk boundary
        at = _wait(lambda: (s := server.get(f"/chameleon/live/{sid}"))["chunk"] >= 2 and s, what="two chunks")
        assert at["status"] == "running", at
        ok = server.post(f"/api/chameleon/live/{sid}/switch", {"garment": "garment2.png"})
        assert ok.get("queued") == "garment", ok
        landed = _wait(lambda: (s := server.get(f"/chameleon/live/{sid}"))["timeline"] and s, what="the switch")
        switch = landed["timeline"][0]
        assert switch["kind"] == "garment" and switch["garment"] == "garment2.png"
        assert at["chunk"] <= switch["chunk"] <= at["chunk"] + 1, (at, switch)
        # a prompt switch (the node has the text encoder)
        assert server.post(f"/chameleon/live/{sid}/switch", {"prompt": "she walks away"})["queued"] == "prompt"
        _wait(lambda: len(server.get(f"/chameleon/live/{sid}")["timeline"]) == 2, what="the prompt switch")

        # frames of this session arrive on the node's own channel while it runs (JPEG data URLs, in order)
        _wait(lambda: [e for e in client.events if e["type"] == "chameleon.live.frame"], what="frames")

        assert server.post(f"/chameleon/live/{sid}/stop", {})["queued"] == "stop"
        history = _wait(lambda: (h := server.get(f"/history/{pid}")).get(pid, {}).get("status", {})
                        .get("completed") is not None and h[pid], what="the prompt to end")
        assert history["status"]["status_str"] == "success", _error(history)
        assert history["outputs"]["show"]["images"]
        final = server.get(f"/chameleon/live/{sid}")
        assert final["status"] == "stopped" and final["frames"] > 0
        assert [e["kind"] for e in final["timeline"]] == ["garment", "prompt"]
        # every frame made was sent, in order, to the client that queued it; ComfyUI's previews are on on this
        # server, and none of them is the live node's (they would be drawn behind the widget's controls)
        frames = _wait(lambda: (f := [e["data"] for e in client.events if e["type"] == "chameleon.live.frame"])
                       and len(f) >= final["frames"] and f, what="every frame")
        assert [f["index"] for f in frames] == list(range(final["frames"])), [f["index"] for f in frames]
        assert all(f["session"] == sid and f["node"] == "live" for f in frames)
        assert all(f["image"].startswith("data:image/jpeg;base64,") for f in frames)
        assert not [p for p in client.previews if p.get("display_node_id") == "live"], client.previews[:3]
        # after the end: 409
        assert server.post(f"/chameleon/live/{sid}/switch", {"garment": "garment2.png"})["http_error"] == 409
        assert server.post(f"/chameleon/live/{sid}/stop", {})["http_error"] == 409
    finally:
        client.close()


def test_live_session_ends_at_the_frame_limit_and_refuses_prompts_without_clip(server):
    queued = server.post("/prompt", {"prompt": _live_prompt(21, clip=False)})
    pid = queued["prompt_id"]
    live = _live_session(server, pid)
    if live["status"] == "running":
        got = server.post(f"/chameleon/live/{live['session']}/switch", {"prompt": "a new prompt"})
        assert got["http_error"] in (400, 409) and ("clip" in got["error"] or "ended" in got["error"])
    history = _wait(
        lambda: (h := server.get(f"/history/{pid}")).get(pid, {}).get("status", {}).get("completed") is not None
        and h[pid], what="the prompt to end")
    assert history["status"]["status_str"] == "success", _error(history)
    final = server.get(f"/chameleon/live/{live['session']}")
    assert final["status"] == "finished" and final["frames"] >= 21, final
    assert len(history["outputs"]["show"]["images"]) == final["frames"]


def _ended(server: Server, pid: str) -> dict:
    return _wait(lambda: (h := server.get(f"/history/{pid}")).get(pid, {}).get("status", {})
                 .get("completed") is not None and h[pid], what="the prompt to end")


def _shown_frames(server: Server, history: dict, node: str = "show"):
    """The frames a PreviewImage / SaveImage node of a run wrote, as uint8 arrays, in order."""
    import numpy as np
    from PIL import Image

    items = history["outputs"][node]["images"]
    folder = {"temp": "temp", "output": "output"}
    return [np.asarray(Image.open(server.base / folder[i["type"]] / i["subfolder"] / i["filename"]).convert("RGB"))
            for i in items]


def test_live_session_exports_a_workflow_that_regenerates_its_frames(server):
    import numpy as np

    queued = server.post("/prompt", {"prompt": _live_prompt(61)})
    pid = queued["prompt_id"]
    sid = _live_session(server, pid)["session"]
    at = _wait(lambda: (s := server.get(f"/chameleon/live/{sid}"))["chunk"] >= 2 and s, what="two chunks")
    assert at["status"] == "running", at
    assert server.post(f"/chameleon/live/{sid}/switch", {"garment": "garment2.png"})["queued"] == "garment"
    history = _ended(server, pid)
    assert history["status"]["status_str"] == "success", _error(history)
    final = server.get(f"/chameleon/live/{sid}")
    assert final["status"] == "finished" and len(final["timeline"]) == 1, final
    switch_chunk = final["timeline"][0]["chunk"]
    assert 0 < switch_chunk < final["chunk"]
    # the timeline beside the frames, with what it takes to replay it
    saved = json.loads(Path(final["timeline_file"]).read_text())
    assert Path(final["timeline_file"]).is_relative_to(server.base / "output")
    assert saved["seed"] == 7 and saved["switches"][0]["garment"] == "garment2.png" and saved["prompt"]

    workflow = server.get(f"/chameleon/live/{sid}/workflow")
    assert "error" not in workflow, workflow
    gens = [v for v in workflow.values() if v["class_type"] == "ChameleonStreamGenerate"]
    assert len(gens) == 2 and any(v["class_type"] == "ChameleonGarmentSwitch" for v in workflow.values())
    replay = server.run(workflow)
    assert replay["status"]["status_str"] == "success", _error(replay)
    save = next(k for k, v in workflow.items() if v["class_type"] == "SaveImage")
    live_frames, replay_frames = _shown_frames(server, history), _shown_frames(server, replay, save)
    assert len(live_frames) == len(replay_frames) == final["frames"]
    worst = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(live_frames, replay_frames))
    assert worst <= 1, f"replay differs from the live session by {worst}/255 (switch at chunk {switch_chunk})"
    with pytest.raises(urllib.error.HTTPError) as missing:
        server.get("/chameleon/live/nope/workflow")
    assert missing.value.code == 404


def test_live_session_cancel_stops_at_a_chunk_boundary_and_keeps_the_frames(server):
    queued = server.post("/prompt", {"prompt": _live_prompt(0)})
    pid = queued["prompt_id"]
    sid = _live_session(server, pid)["session"]
    _wait(lambda: server.get(f"/chameleon/live/{sid}")["chunk"] >= 2, what="two chunks")
    server.post("/interrupt", {})
    history = _ended(server, pid)
    final = server.get(f"/chameleon/live/{sid}")
    assert final["status"] == "cancelled", final
    assert history["status"]["status_str"] == "success", _error(history)
    # whole chunks (chunk_frames 1: the first is 1 video frame, every later one 4), all of them returned
    assert final["chunk"] >= 2 and final["frames"] == 1 + 4 * (final["chunk"] - 1), final
    assert len(history["outputs"]["show"]["images"]) == final["frames"]
    saved = json.loads(Path(final["timeline_file"]).read_text())
    assert saved["ended"] == "cancelled" and saved["chunks"] == final["chunk"]
    # the next prompt runs normally (the interrupt flag was consumed)
    after = server.run(_live_prompt(5))
    assert after["status"]["status_str"] == "success", _error(after)


def test_a_trained_export_loads_in_the_student_loader_with_no_conversion(server):
    """What training exports (``checkpoints.save_transformer``, kind student, the format of
    ``python -m chameleon_core.training ... export/``) is read by ChameleonStudentLoader as it is and streams."""
    import torch

    from chameleon_core.checkpoints import save_transformer
    from tests.tiny_models import tiny_transformer
    from chameleon_core.tools.tiny_checkpoints import (
        TINY_DIT,  # the tiny DiT that takes the tiny umT5's features
    )

    save_transformer(server.base / "models" / "diffusion_models" / "trained_export.safetensors",
                     tiny_transformer(seed=5, config=TINY_DIT), kind="student", metadata={"fashionchameleon.stage": "dmd"},
                     dtype=torch.bfloat16)
    wf = tiny(load_api("single_garment_stream"))
    loader = next(k for k, v in wf.items() if v["class_type"] == "ChameleonStudentLoader")
    wf[loader]["inputs"]["ckpt_name"] = "trained_export.safetensors"
    history = server.run(wf)
    assert history["status"]["status_str"] == "success", _error(history)
    assert server.video_files(history)


# -------------------------------------------------------------------------------------------------------------------
# The demo in a plain ComfyUI; templates that run in one pass; conventions; Stream Decode cases; decode under model
# management
# -------------------------------------------------------------------------------------------------------------------


def test_the_pack_finds_its_demo_files_with_no_command(demo_server):
    """Nothing but the pack is in the demo server's folders: its demo models are in the loaders' dropdowns (the pack
    registered demo/models/...), its demo images were copied into the input folder when it loaded."""
    from chameleon_core.tools import demo_models

    info = demo_server.get("/object_info")
    assert demo_models.STUDENT in json.dumps(info["ChameleonStudentLoader"])
    assert demo_models.VAE in json.dumps(info["ChameleonVAELoader"])
    assert demo_models.PROMPT in json.dumps(info["ChameleonPromptEmbeddings"])
    for name in demo_models.IMAGES:
        copied = demo_server.base / "input" / name
        assert copied.read_bytes() == (demo_models.PACK_DEMO / "input" / name).read_bytes(), name
        assert name in json.dumps(info["LoadImage"])
    assert not (demo_server.base / "models" / "diffusion_models" / demo_models.STUDENT).exists()
    assert "comfyui_launcher" not in demo_server.log.read_text()


@pytest.mark.parametrize("name", ["demo", "demo_switch_chain", "demo_live"])
def test_demo_templates_run_in_a_plain_comfyui_with_no_command(demo_server, name):
    """The demo templates as shipped (shorter and smaller here: one chunk per segment, 64x64) run in ComfyUI's own
    ``main.py`` on the pack's files and write a video; the switch chain switches garments."""
    from chameleon_core.tools import demo_models

    prompt = demo_quick(load_api(name))
    if name == "demo_switch_chain":
        switches = sum(v["class_type"] == "ChameleonGarmentSwitch" for v in prompt.values())
        assert switches == len(demo_models.DEMO_SWITCH_FRAMES)
    history = demo_server.run(prompt)
    assert history["status"]["status_str"] == "success", _error(history)
    videos = demo_server.video_files(history)
    assert videos and all(v.exists() and v.stat().st_size > 0 and v.suffix == ".mp4" for v in videos), videos


def _node_errors(resp: dict) -> dict[str, str]:
    """class_type -> the validation messages of that node (all nodes of the type joined)."""
    out: dict[str, str] = {}
    for err in resp.get("node_errors", {}).values():
        text = " ".join(f"{e['message']}: {e['details']}" for e in err["errors"])
        out[err["class_type"]] = (out.get(err["class_type"], "") + " " + text).strip()
    return out


def test_missing_model_files_are_all_listed_at_the_first_run(server):
    """A shipped template with none of its files: one refusal at validation lists every missing file (the pack's
    loaders' too, not only the core ones), before anything runs."""
    resp = server.post("/prompt", {"prompt": load_api("single_garment_stream")})
    assert resp.get("http_error") == 400, resp
    errors = _node_errors(resp)
    assert {"ChameleonStudentLoader", "VAELoader", "CLIPLoader"} <= set(errors), errors
    assert "fashionchameleon_student_wan2.2_ti2v_5b.safetensors" in errors["ChameleonStudentLoader"]
    assert "models/diffusion_models" in errors["ChameleonStudentLoader"]
    # the student loader says the weights are not public and what to load instead; no browser advice for API callers
    assert "not public" in errors["ChameleonStudentLoader"], errors
    assert "fashionchameleon_demo_student.safetensors" in errors["ChameleonStudentLoader"], errors
    assert not any("browser" in text for text in errors.values()), errors
    demo = load_api("demo")
    for node in demo.values():
        if node["class_type"] in ("ChameleonVAELoader", "ChameleonPromptEmbeddings"):
            key = "vae_name" if node["class_type"] == "ChameleonVAELoader" else "embeddings_name"
            node["inputs"][key] = "not_there.safetensors"
    errors = _node_errors(server.post("/prompt", {"prompt": demo}))
    assert {"ChameleonVAELoader", "ChameleonPromptEmbeddings"} <= set(errors), errors
    assert "models/prompt_embeddings" in errors["ChameleonPromptEmbeddings"]


SEARCH_TERMS = {"try-on", "VTON", "outfit", "garment", "clothes", "streaming", "realtime"}


def test_every_node_has_the_search_aliases(server):
    info = server.get("/object_info")
    ours = sorted(k for k, v in info.items() if v.get("category", "").startswith("FashionChameleon"))
    out = subprocess.run([_comfy_python(), str(REPO / "tests" / "comfyui_inprocess_check.py"), "aliases"],
                         env={**os.environ, "COMFYUI_DIR": COMFYUI_DIR}, capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert sorted(result["aliases"]) == ours
    for node in ours:
        assert SEARCH_TERMS <= set(result["aliases"][node]), node
        if result["supported"]:  # this ComfyUI's schema has search_aliases: the frontend gets them
            assert SEARCH_TERMS <= set(info[node].get("search_aliases", [])), node


def test_every_example_workflows_model_entries_name_the_folder_the_loader_reads(server):
    """A node's ``properties.models`` directory is the ComfyUI folder its file combo lists (checked against the
    server: the tiny files put into that folder appear in that loader's options)."""
    info = server.get("/object_info")
    folder_of = {}
    for node_type, widget, folder, probe in [
        ("ChameleonStudentLoader", "ckpt_name", "diffusion_models", "chameleon_tiny_student.safetensors"),
        ("ChameleonTeacherLoader", "ckpt_name", "diffusion_models", "chameleon_tiny_teacher.safetensors"),
        ("ChameleonTinyDecoderLoader", "decoder_name", "vae_approx", TINY_DECODER),
        ("ChameleonVAELoader", "vae_name", "vae", "chameleon_tiny_wan2.2_vae.safetensors"),
        ("VAELoader", "vae_name", "vae", "chameleon_tiny_wan2.2_vae.safetensors"),
        ("CLIPLoader", "clip_name", "text_encoders", "chameleon_tiny_umt5.safetensors"),
    ]:
        assert (server.base / "models" / folder / probe).exists()
        assert probe in json.dumps(info[node_type]["input"]["required"][widget]), (node_type, probe)
        folder_of[node_type] = folder
    folder_of["ChameleonPromptEmbeddings"] = "prompt_embeddings"
    (server.base / "models" / "loras").mkdir(parents=True, exist_ok=True)
    (server.base / "models" / "loras" / "probe_lora.safetensors").write_bytes(b"")  # listed, never loaded
    info = server.get("/object_info")
    for node_type, widget, folder, probe in [
        ("UNETLoader", "unet_name", "diffusion_models", "chameleon_tiny_student.safetensors"),
        ("LoraLoaderModelOnly", "lora_name", "loras", "probe_lora.safetensors"),
    ]:
        assert probe in json.dumps(info[node_type]["input"]["required"][widget]), (node_type, probe)
        folder_of[node_type] = folder
    # the student loader's LoRA combo lists the loras folder too (its second model entry)
    assert "probe_lora.safetensors" in json.dumps(info["ChameleonStudentLoader"]["input"]["optional"]["lora_name"])
    seen = 0
    for name in NAMES:
        ui = json.loads((REPO / "workflows" / f"{name}.json").read_text())
        for n in ui["nodes"]:
            for i, m in enumerate(n.get("properties", {}).get("models", [])):
                want = "loras" if n["type"] == "ChameleonStudentLoader" and i else folder_of[n["type"]]
                assert m["directory"] == want, (name, n["type"], m)
                seen += 1
    assert seen >= 2 * len(NAMES)


def _chain_prompt(segments: int, frames: int = 12) -> tuple[dict, list[str], str, str]:
    """Tiny single stream with ``segments`` one-chunk Generates; returns (prompt, generate ids, decode id, vae id)."""
    base = tiny(load_api("single_garment_stream"))
    by_type = {v["class_type"]: k for k, v in base.items()}
    for drop in ("CreateVideo", "SaveVideo"):
        del base[by_type[drop]]
    gen, decode = by_type["ChameleonStreamGenerate"], by_type["ChameleonStreamDecode"]
    base[gen]["inputs"]["frames"] = 9
    gens, prev = [gen], gen
    for i in range(1, segments):
        base[f"g{i}"] = {"class_type": "ChameleonStreamGenerate", "inputs": {"stream": [prev, 0], "frames": frames,
                                                                             "steps": 1}}
        prev = f"g{i}"
        gens.append(prev)
    base["show"] = {"class_type": "PreviewImage", "inputs": {"images": [decode, 0]}}
    return base, gens, decode, by_type["VAELoader"]


def test_stream_decode_refuses_gaps_wrong_order_and_other_streams(server):
    prompt, gens, decode, _ = _chain_prompt(3)
    bad = copy.deepcopy(prompt)
    bad[decode]["inputs"].update(segment_1=[gens[0], 1], segment_2=[gens[2], 1])
    _expect_error(server, bad, "ChameleonStreamDecode", "'segment_2'", "a gap", "latent frames 6..8", "Fix:")
    bad = copy.deepcopy(prompt)
    bad[decode]["inputs"].update(segment_1=[gens[1], 1], segment_2=[gens[0], 1])
    _expect_error(server, bad, "ChameleonStreamDecode", "'segment_2'", "out of order", "Fix:")
    bad = copy.deepcopy(prompt)
    start = next(k for k, v in prompt.items() if v["class_type"] == "ChameleonStreamStart")
    bad["start_b"] = copy.deepcopy(prompt[start])
    bad["start_b"]["inputs"]["seed"] = 7
    bad["gen_b"] = {"class_type": "ChameleonStreamGenerate", "inputs": {"stream": ["start_b", 0], "frames": 9,
                                                                          "steps": 1}}
    bad["gen_b2"] = {"class_type": "ChameleonStreamGenerate", "inputs": {"stream": ["gen_b", 0], "frames": 12,
                                                                           "steps": 1}}
    bad[decode]["inputs"].update(segment_1=[gens[0], 1], segment_2=["gen_b2", 1])
    _expect_error(server, bad, "ChameleonStreamDecode", "'segment_2'", "another stream", "Fix:")


def test_stream_decode_blames_a_vae_of_the_other_family_with_the_shapes(server):
    from chameleon_core.checkpoints import save_vae
    from chameleon_core.vae import build_vae, vae_preset

    save_vae(server.base / "models" / "vae" / "tiny_wan2.1_vae.safetensors", build_vae(vae_preset("wan2.1-tiny")))
    prompt, _, decode, _ = _chain_prompt(1)
    prompt["vae21"] = {"class_type": "ChameleonVAELoader", "inputs": {"vae_name": "tiny_wan2.1_vae.safetensors"}}
    prompt[decode]["inputs"]["vae"] = ["vae21", 0]
    _expect_error(server, prompt, "ChameleonStreamDecode", "'vae'", "wan2.1 VAE", "wan2.2 latents",
                  "(1, 48, 3, 4, 4)", "Fix: connect the wan2.2 VAE")
    # the any-size loader on a file that is not a Wan VAE: the loader names it
    (server.base / "models" / "vae" / "broken_vae.safetensors").write_bytes(b"not a safetensors file")
    prompt["vae21"]["inputs"]["vae_name"] = "broken_vae.safetensors"
    _expect_error(server, prompt, "ChameleonVAELoader", "'vae_name'", "broken_vae", "not a readable Wan VAE", "Fix:")


def test_segment_joins_decode_any_number_of_segments_as_one_video(server):
    """Ten segments through a chain of Segment Joins decode as one continuous video: its first frames are those of
    the first eight through the decode node's own inputs (a causal decode: a prefix decodes the same)."""
    prompt, gens, decode, _ = _chain_prompt(10)
    eight = copy.deepcopy(prompt)
    for i, g in enumerate(gens[:8], start=1):
        eight[decode]["inputs"][f"segment_{i}"] = [g, 1]
    eight["png"] = {"class_type": "SaveImage", "inputs": {"images": [decode, 0], "filename_prefix": "eight"}}
    prev = gens[0]
    for i, g in enumerate(gens[1:], start=1):
        prompt[f"join{i}"] = {"class_type": "ChameleonSegmentJoin", "inputs": {"first": [prev, 1] if i == 1 else
                                                                               [prev, 0], "second": [g, 1]}}
        prev = f"join{i}"
    prompt[decode]["inputs"]["segment_1"] = [prev, 0]
    prompt["frames_png"] = {"class_type": "SaveImage", "inputs": {"images": [decode, 0], "filename_prefix": "ten"}}
    first = server.run(eight)
    assert first["status"]["status_str"] == "success", _error(first)
    history = server.run(prompt)
    assert history["status"]["status_str"] == "success", _error(history)
    ten = _frames(server, history)
    assert len(ten) == 1 + 4 * (3 * 10 - 1)
    from PIL import Image

    eight_frames = [Path(server.base / "output" / i["subfolder"] / i["filename"])
                    for i in first["outputs"]["png"]["images"]]
    assert ten[: len(eight_frames)] == [Image.open(f).tobytes() for f in eight_frames]
    # a gap inside the chain is refused by the join
    bad = copy.deepcopy(prompt)
    bad["join2"]["inputs"]["second"] = [gens[3], 1]
    _expect_error(server, bad, "ChameleonSegmentJoin", "'second'", "a gap", "Fix:")


def test_stream_decode_uses_the_vaes_own_weights_under_model_management(server):
    """After Stream Decode the VAE (any-size loader, a real ComfyUI VAE) is held by ComfyUI's model management, no
    tensor anywhere in the process holds a copy of one of its weights, and the frames equal the core's decode."""
    out = subprocess.run([_comfy_python(), str(REPO / "tests" / "comfyui_inprocess_check.py"), "vae-memory",
                          str(server.base / "models"), "chameleon_tiny_wan2.2_vae.safetensors"],
                         env={**os.environ, "COMFYUI_DIR": COMFYUI_DIR}, capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["managed"] and result["weights"] > 100, result
    assert result["copies"] == 0, result
    assert result["frames"] == [1 + 4 * 5, SIZE, SIZE, 3] and result["max_diff"] < 1e-5, result
