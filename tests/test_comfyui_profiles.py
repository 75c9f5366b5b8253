"""The public students' example workflows in a real ComfyUI: every one runs end to end on tiny weights of its
profile's shape, in the form its project publishes them (``python -m chameleon_core.tools.tiny_checkpoints
--profiles``: LongLive 2.0's merged ``model_bf16.pt``, LongLive 1.0's ``longlive_base.pt`` + ``lora.pt``,
Self-Forcing's and CausVid's ``.pt``, under their published names), and the nodes refuse what those streams do not
have. Same variables and server as ``tests/test_comfyui_integration.py`` (skipped without ``COMFYUI_DIR``).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess

import pytest

from tests.test_comfyui_integration import (
    COMFYUI_DIR,
    REPO,
    SIZE,
    TINY_DECODER,
    _comfy_python,
    _error,
    _free_port,
    _link_pack,
    _stop,
    start_tiny_server,
)

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(not COMFYUI_DIR, reason="COMFYUI_DIR is not set: point it at a ComfyUI checkout to run the "
                                               "real-ComfyUI integration test"),
]
NAMES = sorted(p.stem for p in (REPO / "workflows").glob("*.json")
               if p.stem.startswith(("longlive", "self_forcing", "causvid")))
"""The public students' workflows."""
VAES = {"wan2.2_vae.safetensors": "chameleon_tiny_wan2.2_vae.safetensors",
        "wan_2.1_vae.safetensors": "chameleon_tiny_wan2.1_vae.safetensors"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    python = _comfy_python()
    base = tmp_path_factory.mktemp("comfyui_profiles")
    subprocess.run([python, "-m", "chameleon_core.tools.tiny_checkpoints", "--models", str(base / "models"),
                    "--input", str(base / "input"), "--profiles"], cwd=REPO,
                   env={**os.environ, "PYTHONPATH": str(REPO)}, check=True, capture_output=True)
    _link_pack(base)
    proc, srv = start_tiny_server(python, base, _free_port(2))
    yield srv
    _stop(proc)


def tiny(prompt: dict) -> dict:
    """A public student's workflow at tiny size: the tiny VAE, text encoder and decoder, 64x64 (the students' files
    are written under their published names, so the loaders keep them)."""
    p = copy.deepcopy(prompt)
    for node in p.values():
        t, i = node["class_type"], node["inputs"]
        if t == "VAELoader":
            i["vae_name"] = VAES[i["vae_name"]]
        elif t == "CLIPLoader":
            i["clip_name"] = "chameleon_tiny_umt5.safetensors"
        elif t == "ChameleonTinyDecoderLoader":
            i["decoder_name"] = TINY_DECODER
        elif t == "ChameleonVideoSize":
            i["width"] = i["height"] = SIZE
    return p


def load_api(name: str) -> dict:
    return json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text())


def _of(prompt: dict, class_type: str) -> list[str]:
    return sorted((k for k, v in prompt.items() if v["class_type"] == class_type), key=int)


def test_there_is_a_workflow_per_profile_image_to_video_and_live():
    assert {"longlive2_prompt_switch", "longlive2_image_to_video", "longlive2_live", "longlive1_prompt_switch",
            "self_forcing_prompt_switch", "causvid_prompt_switch"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_public_student_workflow_runs_and_writes_a_video(server, name):
    history = server.run(tiny(load_api(name)))
    assert history["status"]["status_str"] == "success", _error(history)
    videos = server.video_files(history)
    assert videos and all(v.exists() and v.stat().st_size > 0 and v.suffix == ".mp4" for v in videos), videos
    log = server.log.read_text()
    profile = name.split("_prompt_switch")[0].split("_image_to_video")[0].split("_live")[0]
    assert f"streams with the {profile} profile" in log, log[-3000:]


def test_image_to_video_starts_from_the_image(server):
    """The image-to-video workflow decodes 125 frames (4 blocks of 8 latent frames), frame 0 being the image's."""
    prompt = tiny(load_api("longlive2_image_to_video"))
    decode = _of(prompt, "ChameleonStreamDecode")[0]
    prompt["png"] = {"class_type": "SaveImage", "inputs": {"images": [decode, 0], "filename_prefix": "i2v"}}
    history = server.run(prompt)
    assert history["status"]["status_str"] == "success", _error(history)
    items = history["outputs"]["png"]["images"]
    assert len(items) == 125


def test_nodes_refuse_what_a_public_students_stream_has_not(server):
    base = tiny(load_api("longlive1_prompt_switch"))
    gen = _of(base, "ChameleonStreamGenerate")[0]
    vae = _of(base, "VAELoader")[0]
    garment = copy.deepcopy(base)
    garment["img"] = {"class_type": "LoadImage", "inputs": {"image": "garment1.png"}}
    garment["sw"] = {"class_type": "ChameleonGarmentSwitch", "inputs": {
        "stream": [gen, 0], "vae": [vae, 0], "garment": ["img", 0], "refresh": True, "withdraw": True,
        "disentangle": True, "withdraw_sink": True}}
    garment[_of(base, "ChameleonPromptSwitch")[0]]["inputs"]["stream"] = ["sw", 0]
    history = server.run(garment)
    assert history["status"]["status_str"] == "error"
    assert "this stream has no garment" in _error(history) and "ChameleonPromptSwitch" in _error(history)

    shot = copy.deepcopy(base)
    shot[_of(base, "ChameleonPromptSwitch")[0]]["inputs"]["new_shot"] = True
    history = server.run(shot)
    assert history["status"]["status_str"] == "error"
    assert "new_shot needs a stream whose profile has shots" in _error(history)

    person = copy.deepcopy(base)
    person["ref"] = {"class_type": "LoadImage", "inputs": {"image": "reference.png"}}
    person["cond"] = {"class_type": "ChameleonConditions", "inputs": {
        "vae": [vae, 0], "reference": ["ref", 0], "garment": ["ref", 0], "width": SIZE, "height": SIZE}}
    person[_of(base, "ChameleonStreamStart")[0]]["inputs"]["conditions"] = ["cond", 0]
    history = server.run(person)
    assert history["status"]["status_str"] == "error"
    assert "longlive1 profile" in _error(history) and "ChameleonVideoSize" in _error(history)


def test_the_profile_can_be_chosen_and_overridden(server):
    """CausVid's model.pt under the self_forcing profile runs too (the loader takes the choice); Stream Start's -1
    settings take the profile's, explicit ones override it."""
    prompt = tiny(load_api("causvid_prompt_switch"))
    prompt[_of(prompt, "ChameleonStudentLoader")[0]]["inputs"]["profile"] = "self_forcing"
    start = _of(prompt, "ChameleonStreamStart")[0]
    prompt[start]["inputs"]["cache_frames"] = 12
    history = server.run(prompt)
    assert history["status"]["status_str"] == "success", _error(history)
