"""Graph specs of the public students' example workflows (one per stream profile, plus image-to-video and the live
node for LongLive 2.0), in the form :mod:`chameleon_core.tools.workflows` turns into UI / API files.

Each loads the student file as its project publishes it, under its published name (``properties.models`` carries
the download address); the loader reads the profile from the file (CausVid's ``model.pt`` says nothing, so its
workflow picks ``causvid``), starts the stream from ChameleonVideoSize at the student's native size, and streams
with the profile's own settings (every Stream Start setting at -1). Not used at run time.
"""

from __future__ import annotations

from ..profiles import PROFILES

VAE22, VAE21 = "wan2.2_vae.safetensors", "wan_2.1_vae.safetensors"
T5 = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
MODELS, INPUTS, START = 0, 400, 900
FIRST_FRAME = "first_frame.png"
AUTO_DETECTED = ("longlive2", "longlive1", "self_forcing")
"""Profiles the loader reads from the published file (LongLive 2.0's merged-file entries, a file name naming the
project); CausVid's ``model.pt`` says nothing, so its workflow names the profile."""

PROMPTS = (
    "A red fox trots through fresh snow in a quiet pine forest at dawn, breath visible in the cold air, soft golden "
    "light through the trees, cinematic, realistic fur detail.",
    "The red fox stops, lifts its head and watches large snowflakes start to fall around it, the forest slowly "
    "turning white, soft light, realistic fur detail.",
    "The scene transitions. A wide aerial shot of a frozen lake surrounded by snowy pine forest at sunrise, pink and "
    "orange sky reflected on the ice, cinematic.",
)
"""Segment prompts (the third starts a new shot; LongLive 2.0 was trained with this scene-cut prefix)."""


def _file(profile: str, index: int = 0) -> str:
    return PROFILES[profile].files[index].name


def _head(n: dict, profile: str, lora: str = "none", image: bool = False) -> None:
    """Loader, VAE, text encoder, first prompt, size (and first frame), Stream Start (ids 1-8)."""
    prof = PROFILES[profile]
    width, height = prof.native_size
    n[1] = ("ChameleonStudentLoader", {"ckpt_name": _file(profile), "weight_dtype": "default",
                                       "profile": "auto" if profile in AUTO_DETECTED else profile, "lora_name": lora},
            {}, (MODELS, 0))
    n[2] = ("VAELoader", {"vae_name": VAE22 if prof.model.startswith("wan2.2") else VAE21}, {}, (MODELS, 1))
    n[3] = ("CLIPLoader", {"clip_name": T5, "type": "wan", "device": "default"}, {}, (MODELS, 2))
    n[4] = ("CLIPTextEncode", {"text": PROMPTS[0]}, {"clip": (3, 0)}, (INPUTS, 0))
    links = {"vae": (2, 0)}
    if image:
        n[5] = ("LoadImage", {"image": FIRST_FRAME}, {}, (INPUTS, 1))
        links["image"] = (5, 0)
    n[7] = ("ChameleonVideoSize", {"width": width, "height": height}, links, (START, 0))
    n[8] = ("ChameleonStreamStart", {"seed": 42, "steps": -1, "chunk_frames": -1, "cache_frames": -1,
                                     "sink_chunks": -1},
            {"student": (1, 0), "positive": (4, 0), "conditions": (7, 0)}, (START, 1))


def _tail(n: dict, profile: str, segments: list[int], first_id: int, x: int, prefix: str) -> None:
    """Decode every segment as one video and save it at the profile's frame rate."""
    prof = PROFILES[profile]
    n[first_id] = ("ChameleonStreamDecode", {"chunk_frames": prof.settings.chunk_frames},
                   {"vae": (2, 0), **{f"segment_{i + 1}": (g, 1) for i, g in enumerate(segments)}}, (x, 0))
    n[first_id + 1] = ("CreateVideo", {"fps": float(prof.fps)}, {"images": (first_id, 0)}, (x, 10))
    n[first_id + 2] = ("SaveVideo", {"filename_prefix": f"fashionchameleon/{prefix}", "format": "auto",
                                     "codec": "auto"}, {"video": (first_id + 1, 0)}, (x, 11))


def _prompt_switch_stream(profile: str, frames: tuple[int, int], lora: str = "none", shot: bool = False) -> dict:
    """Text-to-video: a segment, a prompt switch, a second segment (and for LongLive 2.0 a new shot, a third)."""
    n: dict = {}
    _head(n, profile, lora)
    n[9] = ("ChameleonStreamGenerate", {"frames": frames[0]}, {"stream": (8, 0)}, (1300, 0))
    n[10] = ("CLIPTextEncode", {"text": PROMPTS[1]}, {"clip": (3, 0)}, (1750, 0))
    n[11] = ("ChameleonPromptSwitch", {"new_shot": False}, {"stream": (9, 0), "positive": (10, 0)}, (1750, 1))
    n[12] = ("ChameleonStreamGenerate", {"frames": frames[1]}, {"stream": (11, 0)}, (1750, 2))
    segments = [9, 12]
    if shot:
        n[13] = ("CLIPTextEncode", {"text": PROMPTS[2]}, {"clip": (3, 0)}, (2200, 0))
        n[14] = ("ChameleonPromptSwitch", {"new_shot": True}, {"stream": (12, 0), "positive": (13, 0)}, (2200, 1))
        n[15] = ("ChameleonStreamGenerate", {"frames": frames[1]}, {"stream": (14, 0)}, (2200, 2))
        segments.append(15)
    _tail(n, profile, segments, 20, 2650 if shot else 2200, f"{profile}_prompt_switch")
    return n


def longlive2_prompt_switch() -> dict:
    """LongLive 2.0: 93 frames, a prompt switch, 96 frames, a new shot, 96 frames (24 fps)."""
    return _prompt_switch_stream("longlive2", (93, 96), shot=True)


def longlive2_image_to_video() -> dict:
    """LongLive 2.0 image-to-video: the stream's first frame is the image."""
    n: dict = {}
    _head(n, "longlive2", image=True)
    n[9] = ("ChameleonStreamGenerate", {"frames": 125}, {"stream": (8, 0)}, (1300, 0))
    _tail(n, "longlive2", [9], 20, 1750, "longlive2_image_to_video")
    return n


def longlive1_prompt_switch() -> dict:
    """LongLive 1.0 (base + LoRA): 81 frames, a prompt switch (its re-cache), 84 frames (16 fps)."""
    return _prompt_switch_stream("longlive1", (81, 84), lora=_file("longlive1", 1))


def self_forcing_prompt_switch() -> dict:
    """Self-Forcing: 81 frames (its 21-latent-frame rollout), a prompt switch, 48 more frames (16 fps)."""
    return _prompt_switch_stream("self_forcing", (81, 48))


def causvid_prompt_switch() -> dict:
    """CausVid: 81 frames, a prompt switch, 48 more frames (16 fps)."""
    return _prompt_switch_stream("causvid", (81, 48))


def longlive2_live() -> dict:
    """The live node with LongLive 2.0: type a new prompt into the widget while it streams."""
    n: dict = {}
    _head(n, "longlive2")
    del n[8]
    n[9] = ("ChameleonTinyDecoderLoader", {"decoder_name": "taew2_2.safetensors", "weight_dtype": "default"}, {},
            (MODELS, 3))
    n[10] = ("ChameleonLiveStream", {"seed": 42, "steps": -1, "chunk_frames": -1, "cache_frames": -1,
                                     "sink_chunks": -1, "max_frames": 285},
             {"student": (1, 0), "positive": (4, 0), "conditions": (7, 0), "vae": (2, 0), "decoder": (9, 0),
              "clip": (3, 0)}, (1300, 0))
    n[11] = ("CreateVideo", {"fps": 24.0}, {"images": (10, 0)}, (1800, 10))
    n[12] = ("SaveVideo", {"filename_prefix": "fashionchameleon/longlive2_live", "format": "auto", "codec": "auto"},
             {"video": (11, 0)}, (1800, 11))
    return n


PROFILE_WORKFLOWS = (longlive2_prompt_switch, longlive2_image_to_video, longlive2_live, longlive1_prompt_switch,
                     self_forcing_prompt_switch, causvid_prompt_switch)

_HEAD = [("Models", [1, 2, 3]), ("Prompt", [4]), ("Size and stream start", [7, 8])]
_SWITCH = [("Segment 1: first prompt", [9]), ("Prompt switch", [10, 11, 12])]
_NOTE = "The student streams with its own loop (its profile, read from the file; docs/profiles.md)."

PROFILE_EXTRAS: dict[str, dict] = {
    "longlive2_prompt_switch": {
        "title": "LongLive 2.0: text to video with a prompt switch and a new shot",
        "summary": "LongLive 2.0 streams 93 frames at 1280x704 with its own loop, switches the prompt, then starts a new shot.",
        "description": "LongLive 2.0 (Wan2.2-TI2V-5B) streams 93 frames at 1280x704, switches the prompt (it takes "
                       "effect from the next 8-frame block), then starts a new shot (new_shot: RoPE offset and a shot "
                       "sink, as its multi-shot inference does). " + _NOTE,
        "groups": [*_HEAD, *_SWITCH, ("New shot", [13, 14, 15]), ("Decode and save", [20, 21, 22])],
    },
    "longlive2_image_to_video": {
        "title": "LongLive 2.0: image to video",
        "summary": "LongLive 2.0 streams 125 frames at 1280x704 from an image held as the first frame.",
        "description": "LongLive 2.0 streams 125 frames from an image: the first frame is held to it, as its I2V "
                       "inference does. " + _NOTE,
        "groups": [("Models", [1, 2, 3]), ("Prompt and first frame", [4, 5]), ("Size and stream start", [7, 8]),
                   ("Stream", [9]), ("Decode and save", [20, 21, 22])],
    },
    "longlive2_live": {
        "title": "LongLive 2.0 live: switch the prompt while it streams",
        "summary": "LongLive 2.0 streams into the live node; type a new prompt into the widget to switch it.",
        "description": "LongLive 2.0 streams into the live node (the tiny decoder shows each block as it is made); "
                       "type a new prompt into the widget to switch. No garment: it is a text-to-video student.",
        "groups": [("Models", [1, 2, 3, 9]), ("Prompt and size", [4, 7]), ("Live stream: type a prompt here", [10]), ("Save", [11, 12])],
    },
    "longlive1_prompt_switch": {
        "title": "LongLive 1.0: text to video with a prompt switch",
        "summary": "LongLive 1.0 (Wan2.1 1.3B + LoRA) streams 81 frames at 832x480, then switches the prompt with its re-cache.",
        "description": "LongLive 1.0 (Wan2.1-T2V-1.3B, base + LoRA merged on loading) streams 81 frames at 832x480, "
                       "switches the prompt with its KV re-cache, and streams 84 more. " + _NOTE,
        "groups": [*_HEAD, *_SWITCH, ("Decode and save", [20, 21, 22])],
    },
    "self_forcing_prompt_switch": {
        "title": "Self-Forcing: text to video with a prompt switch",
        "summary": "Self-Forcing (Wan2.1 1.3B) streams its 81-frame rollout at 832x480, then the prompt switches.",
        "description": "Self-Forcing (Wan2.1-T2V-1.3B) streams its 81-frame rollout at 832x480, then the prompt "
                       "switches (the pack re-caches the frames held; Self-Forcing itself has no switch) and 48 "
                       "more frames stream on a rolling cache. " + _NOTE,
        "groups": [*_HEAD, *_SWITCH, ("Decode and save", [20, 21, 22])],
    },
    "causvid_prompt_switch": {
        "title": "CausVid: text to video with a prompt switch",
        "summary": "CausVid (Wan2.1 1.3B, 3 steps) streams 81 frames at 832x480, then the prompt switches.",
        "description": "CausVid (Wan2.1-T2V-1.3B, 3 steps) streams 81 frames at 832x480, then the prompt switches "
                       "(the pack's re-cache) for 48 more. " + _NOTE,
        "groups": [*_HEAD, *_SWITCH, ("Decode and save", [20, 21, 22])],
    },
}
