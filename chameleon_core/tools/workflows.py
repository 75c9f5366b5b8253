"""Regenerate the example workflows from the graph specs below.

Writes ``workflows/<name>.json`` (UI format: what the ComfyUI frontend saves and loads, and what the template
browser lists; it reads ``workflows/*.json`` of a custom node pack directly) and ``workflows/api/<name>.json`` (the
API format that ``POST /prompt`` takes), using a running ComfyUI's ``/object_info`` for the widget order and
comfy-cli's UI-to-API converter for the twin, and refreshes ``tests/data/object_info.json`` (that server's schemas of
this pack's nodes and of every node the workflows use). ``tests/test_workflows.py`` checks that each pair agrees.

    python -m chameleon_core.tools.workflows --server http://127.0.0.1:8188

Not used at run time; the JSON files are the product.
"""

from __future__ import annotations

import argparse
import json
import logging
import urllib.request
from pathlib import Path

from ..config import StreamSettings
from ..frames import whole_chunk_segments
from . import demo_models, workflow_layout
from .workflow_document import to_ui
from .workflows_profiles import PROFILE_EXTRAS, PROFILE_WORKFLOWS

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parents[2] / "workflows"
"""The pack's workflows folder (ComfyUI's template browser lists its ``*.json``)."""
SNAPSHOT = Path(__file__).resolve().parents[2] / "tests" / "data" / "object_info.json"
"""The schema snapshot ``tests/test_workflows.py`` reads."""
PROMPT = ("A young woman stands in a bright studio and turns slowly toward the camera, the garment moving naturally "
          "with her; soft daylight, realistic fabric texture, full-body shot.")
NEGATIVE = ("bright colors, overexposed, static, blurred details, subtitles, style, artwork, painting, still picture, "
            "gray, worst quality, low quality, JPEG artifacts, ugly, deformed, extra fingers, poorly drawn hands, "
            "poorly drawn face, malformed limbs, fused fingers, messy background, walking backwards")
STUDENT = "fashionchameleon_student_wan2.2_ti2v_5b.safetensors"
TEACHER = "fashionchameleon_teacher_wan2.2_ti2v_5b.safetensors"
VAE = "wan2.2_vae.safetensors"
T5 = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
TINY_DECODER = "taew2_2.safetensors"
DEMO_STUDENT, DEMO_VAE, DEMO_PROMPT = demo_models.STUDENT, demo_models.VAE, demo_models.PROMPT
DEMO_IMAGES = demo_models.IMAGES
DEFAULTS = StreamSettings()
"""The stream settings the templates start from (FashionChameleon's: typed nowhere else)."""
STREAM_DEFAULTS = {"steps": DEFAULTS.steps, "chunk_frames": DEFAULTS.chunk_frames,
                   "cache_frames": DEFAULTS.cache_frames, "sink_chunks": DEFAULTS.sink_chunks}
"""Stream Start's and the live node's settings inputs in the student templates."""
DEMO_STREAM = {name: getattr(demo_models.DEMO_SETTINGS, name) for name in STREAM_DEFAULTS}
"""The same in the demo templates (``demo_models.DEMO_SETTINGS``: the demo student's chunk and cache)."""


# Column hints (spec ``pos`` x): the layout keeps the columns' order and moves them apart as far as their nodes need;
# in a column, nodes stack in the order of their hint y. One column per group keeps the groups apart.
MODELS, INPUTS, START = 0, 400, 900


def _common(nodes: dict) -> None:
    nodes[2] = ("VAELoader", {"vae_name": VAE}, {}, (MODELS, 1))
    nodes[3] = ("CLIPLoader", {"clip_name": T5, "type": "wan", "device": "default"}, {}, (MODELS, 2))
    nodes[4] = ("CLIPTextEncode", {"text": PROMPT}, {"clip": (3, 0)}, (INPUTS, 0))
    nodes[5] = ("LoadImage", {"image": "reference.png"}, {}, (INPUTS, 1))
    nodes[6] = ("LoadImage", {"image": "garment1.png"}, {}, (INPUTS, 2))
    nodes[7] = ("ChameleonConditions", {"width": 704, "height": 1280},
                {"vae": (2, 0), "reference": (5, 0), "garment": (6, 0)}, (START, 0))


def _stream_head(nodes: dict) -> None:
    nodes[1] = ("ChameleonStudentLoader", {"ckpt_name": STUDENT, "weight_dtype": "default"}, {}, (MODELS, 0))
    _common(nodes)
    nodes[8] = ("ChameleonStreamStart", {"seed": 42, **STREAM_DEFAULTS},
                {"student": (1, 0), "positive": (4, 0), "conditions": (7, 0)}, (START, 1))


def _video_tail(nodes: dict, images: tuple[int, int], first_id: int, x: int, prefix: str) -> None:
    nodes[first_id] = ("CreateVideo", {"fps": 24.0}, {"images": images}, (x, 10))
    nodes[first_id + 1] = ("SaveVideo", {"filename_prefix": f"fashionchameleon/{prefix}", "format": "auto",
                                         "codec": "auto"}, {"video": (first_id, 0)}, (x, 11))


HEAD_GROUPS = [("Models", [1, 2, 3]), ("Prompt and images", [4, 5, 6]), ("Conditions and stream start", [7, 8])]


def single_garment_stream() -> dict:
    n: dict = {}
    _stream_head(n)
    n[9] = ("ChameleonStreamGenerate", {"frames": 81}, {"stream": (8, 0)}, (1300, 0))
    n[10] = ("ChameleonStreamDecode", {"chunk_frames": DEFAULTS.chunk_frames}, {"vae": (2, 0), "segment_1": (9, 1)}, (1700, 0))
    _video_tail(n, (10, 0), 11, 1700, "single_garment")
    return n


def _switch_chain(n: dict, segments: list[int], images: tuple[str, ...], vae: int, prefix: str,
                  chunk_frames: int = DEFAULTS.chunk_frames) -> None:
    """Generate -> (Load Image, Garment Switch, Generate) per switch -> Decode of every segment -> video, after a
    stream head (node 8); ``segments``: video frames per segment, ``images``: the garments after garment 1."""
    if len(segments) - 1 > len(images):
        raise ValueError(f"{len(segments) - 1} switches need {len(segments) - 1} garment images; there are "
                         f"{len(images)}")
    n[9] = ("ChameleonStreamGenerate", {"frames": segments[0]}, {"stream": (8, 0)}, (1300, 0))
    gens = [9]
    for k, frames in enumerate(segments[1:], 1):
        image, switch, gen, x = 7 + 3 * k, 8 + 3 * k, 9 + 3 * k, 1300 + 400 * k
        n[image] = ("LoadImage", {"image": images[k - 1]}, {}, (x, 0))
        n[switch] = ("ChameleonGarmentSwitch", {"refresh": True, "withdraw": True, "disentangle": True,
                                                "withdraw_sink": True},
                     {"stream": (gens[-1], 0), "vae": (vae, 0), "garment": (image, 0)}, (x, 1))
        n[gen] = ("ChameleonStreamGenerate", {"frames": frames}, {"stream": (switch, 0)}, (x, 2))
        gens.append(gen)
    decode, x = 10 + 3 * (len(segments) - 1), 1300 + 400 * len(segments)
    n[decode] = ("ChameleonStreamDecode", {"chunk_frames": chunk_frames},
                 {"vae": (vae, 0), **{f"segment_{i}": (g, 1) for i, g in enumerate(gens, 1)}}, (x, 0))
    _video_tail(n, (decode, 0), decode + 1, x, prefix)


def _chain_groups(segments: list[int]) -> list[tuple[str, list[int]]]:
    """The switch chain's groups: each segment with the frames it covers, then decode and save."""
    starts = [sum(segments[:i]) for i in range(len(segments))]
    groups = [(f"Garment 1: frames 0-{segments[0] - 1}", [9])]
    for k, start in enumerate(starts[1:], 1):
        groups.append((f"Garment {k + 1} from frame {start}", [7 + 3 * k, 8 + 3 * k, 9 + 3 * k]))
    decode = 10 + 3 * (len(segments) - 1)
    return [*groups, ("Decode and save", [decode, decode + 1, decode + 2])]


CHAIN_SEGMENTS = [45, 44, 44]
"""Video frames per segment of ``garment_switch_chain`` (switches at frames 45 and 89; four chunks each: a garment
switch starts a new clip, so the chunks after it show one latent frame less)."""


def garment_switch_chain() -> dict:
    n: dict = {}
    _stream_head(n)
    _switch_chain(n, CHAIN_SEGMENTS, ("garment2.png", "garment3.png"), 2, "garment_switch_chain")
    return n


def teacher_quality() -> dict:
    n: dict = {}
    n[1] = ("ChameleonTeacherLoader", {"ckpt_name": TEACHER, "weight_dtype": "default"}, {}, (MODELS, 0))
    _common(n)
    n[8] = ("CLIPTextEncode", {"text": NEGATIVE}, {"clip": (3, 0)}, (INPUTS, 0.5))
    n[9] = ("ChameleonTeacherSampler", {"frames": 81, "steps": 50, "cfg": 3.0, "shift": 5.0, "seed": 42,
                                        "sampler": "unipc"},
            {"teacher": (1, 0), "positive": (4, 0), "negative": (8, 0), "conditions": (7, 0)}, (START, 1))
    n[10] = ("VAEDecode", {}, {"samples": (9, 0), "vae": (2, 0)}, (1300, 0))
    _video_tail(n, (10, 0), 11, 1300, "teacher_quality")
    return n


def long_video() -> dict:
    n: dict = {}
    _stream_head(n)
    n[9] = ("ChameleonStreamGenerate", {"frames": 249}, {"stream": (8, 0)}, (1300, 0))
    n[10] = ("CLIPTextEncode", {"text": PROMPT.replace("turns slowly toward the camera", "walks forward, then spins "
                                                       "around once")}, {"clip": (3, 0)}, (1750, 0))
    n[11] = ("ChameleonPromptSwitch", {}, {"stream": (9, 0), "positive": (10, 0)}, (1750, 1))
    n[12] = ("ChameleonStreamGenerate", {"frames": 240}, {"stream": (11, 0)}, (1750, 2))
    n[13] = ("ChameleonStreamDecode", {"chunk_frames": DEFAULTS.chunk_frames},
             {"vae": (2, 0), "segment_1": (9, 1), "segment_2": (12, 1)}, (2250, 0))
    _video_tail(n, (13, 0), 14, 2250, "long_video")
    return n


def live_preview_stream() -> dict:
    """The live path: the tiny decoder shows each chunk as it is generated and decodes the segment (no full VAE
    decode; swap the decode's decoder out for the final render)."""
    n: dict = {}
    _stream_head(n)
    n[9] = ("ChameleonTinyDecoderLoader", {"decoder_name": TINY_DECODER, "weight_dtype": "default"}, {}, (MODELS, 3))
    n[10] = ("ChameleonStreamGenerate", {"frames": 129}, {"stream": (8, 0), "decoder": (9, 0)}, (1300, 0))
    n[11] = ("ChameleonStreamDecode", {"chunk_frames": DEFAULTS.chunk_frames},
             {"vae": (2, 0), "segment_1": (10, 1), "decoder": (9, 0)}, (1700, 0))
    _video_tail(n, (11, 0), 12, 1700, "live_preview_stream")
    return n


def live_session() -> dict:
    """Live mode: the video streams into the live node while the garment and prompt are switched from its widget;
    the frames are saved, and the timeline output records the switches."""
    n: dict = {}
    n[1] = ("ChameleonStudentLoader", {"ckpt_name": STUDENT, "weight_dtype": "default"}, {}, (MODELS, 0))
    _common(n)
    n[8] = ("ChameleonTinyDecoderLoader", {"decoder_name": TINY_DECODER, "weight_dtype": "default"}, {}, (MODELS, 3))
    n[9] = ("ChameleonLiveStream", {"seed": 42, **STREAM_DEFAULTS, "max_frames": 241},
            {"student": (1, 0), "positive": (4, 0), "conditions": (7, 0), "vae": (2, 0), "decoder": (8, 0),
             "clip": (3, 0)}, (1300, 0))
    _video_tail(n, (9, 0), 10, 1800, "live_session")
    return n


# -- options (issue 16): try-on onto a video, motion transfer, condition weighting, local attention ---------------

SOURCE_FRAMES = 81
"""Frames of the example source video (a still image repeated: swap in LoadVideo -> GetVideoComponents)."""


SOURCE, OPTION, SWITCH, OUTPUT = 1300, 1700, 2100, 2500
"""Column hints of the option workflows: the source video, the option and its stream, a switch, decode and save."""


def _source_video(nodes: dict, first_id: int, image: tuple[int, int], frames: int) -> tuple[int, int]:
    """A source video at the stream size: image -> ImageScale -> RepeatImageBatch -> VAEEncode; returns its LATENT."""
    nodes[first_id] = ("ImageScale", {"upscale_method": "bilinear", "width": 704, "height": 1280, "crop": "center"},
                       {"image": image}, (SOURCE, 0))
    nodes[first_id + 1] = ("RepeatImageBatch", {"amount": frames}, {"image": (first_id, 0)}, (SOURCE, 1))
    nodes[first_id + 2] = ("VAEEncode", {}, {"pixels": (first_id + 1, 0), "vae": (2, 0)}, (SOURCE, 2))
    return (first_id + 2, 0)


def video_tryon() -> dict:
    """Try-on onto a person video inside a garment mask, with a garment switch mid-video (VITON-DiT's task)."""
    n: dict = {}
    _stream_head(n)
    video = _source_video(n, 9, (5, 0), SOURCE_FRAMES)
    n[12] = ("SolidMask", {"value": 1.0, "width": 704, "height": 1280}, {}, (SOURCE, 3))
    n[13] = ("ChameleonVideoTryOn", {"strength": 0.94}, {"stream": (8, 0), "video": video, "mask": (12, 0)},
             (OPTION, 0))
    n[14] = ("ChameleonStreamGenerate", {"frames": 45}, {"stream": (13, 0)}, (OPTION, 1))
    n[15] = ("LoadImage", {"image": "garment2.png"}, {}, (SWITCH, 0))
    n[16] = ("ChameleonGarmentSwitch", {"refresh": True, "withdraw": True, "disentangle": True,
                                        "withdraw_sink": True},
             {"stream": (14, 0), "vae": (2, 0), "garment": (15, 0)}, (SWITCH, 1))
    n[17] = ("ChameleonStreamGenerate", {"frames": 32}, {"stream": (16, 0)}, (SWITCH, 2))
    n[18] = ("ChameleonStreamDecode", {"chunk_frames": DEFAULTS.chunk_frames},
             {"vae": (2, 0), "segment_1": (14, 1), "segment_2": (17, 1)}, (OUTPUT, 0))
    _video_tail(n, (18, 0), 19, OUTPUT, "video_tryon")
    return n


def video_tryon_keyframes() -> dict:
    """Long-video try-on: keyframes at the segment starts first, then each segment filled from its keyframe."""
    n: dict = {}
    _stream_head(n)
    video = _source_video(n, 9, (5, 0), 241)
    n[12] = ("SolidMask", {"value": 1.0, "width": 704, "height": 1280}, {}, (SOURCE, 3))
    n[13] = ("ChameleonVideoTryOnKeyframes", {"segment_chunks": 4, "strength": 0.94},
             {"stream": (8, 0), "video": video, "mask": (12, 0)}, (OPTION, 0))
    n[14] = ("ChameleonStreamDecode", {"chunk_frames": DEFAULTS.chunk_frames}, {"vae": (2, 0), "segment_1": (13, 0)}, (SWITCH, 0))
    _video_tail(n, (14, 0), 15, SWITCH, "video_tryon_keyframes")
    return n


def motion_transfer() -> dict:
    """The stream follows a driving video's motion (the same noised-latent injection at a lower strength)."""
    n: dict = {}
    _stream_head(n)
    driving = _source_video(n, 9, (5, 0), SOURCE_FRAMES)
    n[12] = ("ChameleonMotionTransfer", {"strength": 0.83}, {"stream": (8, 0), "driving": driving}, (OPTION, 0))
    n[13] = ("ChameleonStreamGenerate", {"frames": SOURCE_FRAMES}, {"stream": (12, 0)}, (OPTION, 1))
    n[14] = ("ChameleonStreamDecode", {"chunk_frames": DEFAULTS.chunk_frames}, {"vae": (2, 0), "segment_1": (13, 1)}, (SWITCH, 0))
    _video_tail(n, (14, 0), 15, SWITCH, "motion_transfer")
    return n


def _weighting(n: dict, model: tuple[int, int]) -> None:
    n[20] = ("ChameleonConditionWeighting", {"early_bias": -2.0, "late_bias": 0.0, "ramp": "linear", "schedule": ""},
             {"model": model}, (MODELS, 0.5))


def condition_weighting_stream() -> dict:
    """Stream with condition weighting: weak reference/garment attention early in each chunk's steps, full late."""
    n: dict = {}
    _stream_head(n)
    _weighting(n, (1, 0))
    n[8][2]["student"] = (20, 0)
    n[9] = ("ChameleonStreamGenerate", {"frames": 81}, {"stream": (8, 0)}, (SOURCE, 0))
    n[10] = ("ChameleonStreamDecode", {"chunk_frames": DEFAULTS.chunk_frames}, {"vae": (2, 0), "segment_1": (9, 1)}, (OPTION, 0))
    _video_tail(n, (10, 0), 11, OPTION, "condition_weighting_stream")
    return n


def condition_weighting_teacher() -> dict:
    """The teacher with condition weighting over its 50 steps (CustomCrafter's schedule: motion first, detail last)."""
    n = teacher_quality()
    _weighting(n, (1, 0))
    n[9][2]["teacher"] = (20, 0)
    n[12] = (n[12][0], {**n[12][1], "filename_prefix": "fashionchameleon/condition_weighting_teacher"}, *n[12][2:])
    return n


def local_attention_stream() -> dict:
    """A long stream with frame-local attention (each chunk sees the conditions, the sink and 6 nearest frames)."""
    n: dict = {}
    _stream_head(n)
    n[9] = ("ChameleonLocalAttention", {"local_frames": 6}, {"stream": (8, 0)}, (SOURCE, 0))
    n[10] = ("ChameleonStreamGenerate", {"frames": 249}, {"stream": (9, 0)}, (SOURCE, 1))
    n[11] = ("ChameleonStreamDecode", {"chunk_frames": DEFAULTS.chunk_frames}, {"vae": (2, 0), "segment_1": (10, 1)}, (OPTION, 0))
    _video_tail(n, (11, 0), 12, OPTION, "local_attention_stream")
    return n


OPTION_WORKFLOWS = (video_tryon, video_tryon_keyframes, motion_transfer, condition_weighting_stream,
                    condition_weighting_teacher, local_attention_stream)

NATIVE_LORA = "your_wan2.2_ti2v_5b_lora.safetensors"


def native_model_stream() -> dict:
    """The student through ComfyUI's own loaders: Load Diffusion Model (any weight dtype, fp8 included), a LoRA
    (LoraLoaderModelOnly) and ModelSamplingSD3's shift, then FashionChameleon Model From Native MODEL into the stream
    (ComfyUI's casting, LoRA patches and low-VRAM partial loading apply; swap in a GGUF loader the same way)."""
    n: dict = {}
    _stream_head(n)
    n[20] = ("UNETLoader", {"unet_name": STUDENT, "weight_dtype": "default"}, {}, (MODELS - 450, 0))
    n[21] = ("LoraLoaderModelOnly", {"lora_name": NATIVE_LORA, "strength_model": 1.0}, {"model": (20, 0)},
             (MODELS - 450, 1))
    n[22] = ("ModelSamplingSD3", {"shift": 5.0}, {"model": (21, 0)}, (MODELS - 450, 2))
    n[1] = ("ChameleonNativeModel", {"kind": "student"}, {"model": (22, 0)}, (MODELS - 450, 3))
    n[9] = ("ChameleonStreamGenerate", {"frames": 81}, {"stream": (8, 0)}, (SOURCE, 0))
    n[10] = ("ChameleonStreamDecode", {"chunk_frames": DEFAULTS.chunk_frames}, {"vae": (2, 0), "segment_1": (9, 1)}, (OPTION, 0))
    _video_tail(n, (10, 0), 11, OPTION, "native_model_stream")
    return n


# -- the demo templates: the pack's shipped demo files (demo/), no downloads ----------------------------------------

DEMO_SEGMENTS = whole_chunk_segments(demo_models.DEMO_CHAIN_FRAMES, demo_models.DEMO_SWITCH_FRAMES,
                                     demo_models.DEMO_CHUNK_FRAMES, switches_open_clips=True)
"""Video frames per segment of ``demo_switch_chain`` (from ``demo_models``' constants, checked to be whole chunks)."""


def _demo_head(n: dict) -> None:
    """The demo's loaders (student, any-size VAE, prompt features: no umT5-XXL), person and garment 1, conditions at
    the demo size and the stream start; the prompt is node 3 (there is no node 4)."""
    n[1] = ("ChameleonStudentLoader", {"ckpt_name": DEMO_STUDENT, "weight_dtype": "default"}, {}, (MODELS, 0))
    n[2] = ("ChameleonVAELoader", {"vae_name": DEMO_VAE}, {}, (MODELS, 1))
    n[3] = ("ChameleonPromptEmbeddings", {"embeddings_name": DEMO_PROMPT}, {}, (MODELS, 2))
    n[5] = ("LoadImage", {"image": DEMO_IMAGES[0]}, {}, (INPUTS, 1))
    n[6] = ("LoadImage", {"image": DEMO_IMAGES[1]}, {}, (INPUTS, 2))
    n[7] = ("ChameleonConditions", {"width": demo_models.DEMO_WIDTH, "height": demo_models.DEMO_HEIGHT},
            {"vae": (2, 0), "reference": (5, 0), "garment": (6, 0)}, (START, 0))


def _demo_stream_head(n: dict) -> None:
    _demo_head(n)
    n[8] = ("ChameleonStreamStart", {"seed": 42, **DEMO_STREAM},
            {"student": (1, 0), "positive": (3, 0), "conditions": (7, 0)}, (START, 1))


def demo() -> dict:
    """The smallest stream on the shipped demo files: one garment, Start -> Generate -> Decode -> video."""
    n: dict = {}
    _demo_stream_head(n)
    n[9] = ("ChameleonStreamGenerate", {"frames": whole_chunk_segments(demo_models.DEMO_FRAMES, (), demo_models.DEMO_CHUNK_FRAMES)[0]},
            {"stream": (8, 0)}, (1300, 0))
    n[10] = ("ChameleonStreamDecode", {"chunk_frames": demo_models.DEMO_CHUNK_FRAMES},
             {"vae": (2, 0), "segment_1": (9, 1)}, (1700, 0))
    _video_tail(n, (10, 0), 11, 1700, "demo")
    return n


def demo_switch_chain() -> dict:
    """``garment_switch_chain`` on the shipped demo files: switches at ``demo_models.DEMO_SWITCH_FRAMES``."""
    n: dict = {}
    _demo_stream_head(n)
    _switch_chain(n, DEMO_SEGMENTS, DEMO_IMAGES[2:], 2, "demo_switch_chain", demo_models.DEMO_CHUNK_FRAMES)
    return n


def demo_live() -> dict:
    """``live_session`` on the shipped demo files: the live node streams into its widget; switch garments there."""
    n: dict = {}
    _demo_head(n)
    n[7] = (*n[7][:3], (INPUTS, 3))  # under the images: the live node comes third, in view when the template opens
    n[9] = ("ChameleonLiveStream", {"seed": 42, **DEMO_STREAM, "max_frames": demo_models.DEMO_LIVE_FRAMES},
            {"student": (1, 0), "positive": (3, 0), "conditions": (7, 0), "vae": (2, 0)}, (START, 0))
    _video_tail(n, (9, 0), 10, 1400, "demo_live")
    return n


DEMO_WORKFLOWS = (demo, demo_live, demo_switch_chain)
"""The templates that run on the shipped demo files as they are."""
WORKFLOWS = {f.__name__: f for f in (*DEMO_WORKFLOWS, single_garment_stream, garment_switch_chain, teacher_quality,
                                     long_video, live_preview_stream, live_session, *OPTION_WORKFLOWS,
                                     native_model_stream, *PROFILE_WORKFLOWS)}

_W, _H = demo_models.DEMO_WIDTH, demo_models.DEMO_HEIGHT
_SWITCHES = " and ".join(str(f) for f in demo_models.DEMO_SWITCH_FRAMES)
DEMO_HEAD_GROUPS = [("Demo models", [1, 2, 3]), ("Person and garment 1", [5, 6]),
                    ("Conditions, stream start", [7, 8])]
EXTRAS: dict[str, dict] = {
    "demo": {
        "title": "Demo: one stream (no downloads)",
        "summary": f"The smallest stream, on the demo files that ship with the pack: {_W}x{_H}, "
                   f"{demo_models.DEMO_FRAMES} frames, one garment; seconds on a CPU.",
        "description": "Load the models and images -> encode the conditions -> start the stream -> generate -> "
                       "decode -> save a video (output/fashionchameleon/). Run it as it is.",
        "groups": [*DEMO_HEAD_GROUPS, ("Stream", [9]), ("Decode and save", [10, 11, 12])],
    },
    "demo_live": {
        "title": "Demo: live session (no downloads)",
        "summary": "The live node on the pack's demo files: the video streams into the node at 24 fps; switch the "
                   "garment from its widget while it runs.",
        "description": f"Press Run: frames appear in the Live Stream node (up to {demo_models.DEMO_LIVE_FRAMES} "
                       "frames, about 20 s). Pick a garment in its list (the demo's are "
                       "fashionchameleon_demo_garment2/3.png, or upload one) and press Switch garment: it lands at "
                       "the next chunk and the timeline records it. Stop ends it early; the frames are saved.",
        "groups": [DEMO_HEAD_GROUPS[0], ("Person, garment 1, conditions", [5, 6, 7]),
                   ("Live stream: switch here", [9]), ("Save", [10, 11])],
    },
    "demo_switch_chain": {
        "title": "Demo: garment switch chain (no downloads)",
        "summary": f"{demo_models.DEMO_CHAIN_FRAMES} frames on the pack's demo files with garment switches at frames "
                   f"{_SWITCHES}; editing a later segment re-runs only what follows it.",
        "description": "garment_switch_chain on the demo files: each Garment Switch reschedules the KV cache "
                       "(garment refresh, history withdraw, reference disentangle) between two Generate nodes.",
        "groups": [*DEMO_HEAD_GROUPS, *_chain_groups(DEMO_SEGMENTS)],
    },
    "single_garment_stream": {
        "title": "One garment, one stream",
        "summary": "81 frames (7 chunks) of the person in garment 1 from the causal 4-step student at 704x1280.",
        "groups": [*HEAD_GROUPS, ("Stream: 81 frames", [9]), ("Decode and save", [10, 11, 12])],
    },
    "garment_switch_chain": {
        "title": "Garment switch chain",
        "summary": "133 frames with two garment switches (at frames 45 and 89) by KV-cache rescheduling; editing a "
                   "later segment re-runs only what follows it.",
        "groups": [*HEAD_GROUPS, *_chain_groups(CHAIN_SEGMENTS)],
    },
    "teacher_quality": {
        "title": "Teacher quality (bidirectional, 50 steps)",
        "summary": "81 frames from the bidirectional teacher (UniPC, 50 steps, CFG 3): the quality reference the "
                   "student is distilled from; slow.",
        "groups": [("Models", [1, 2, 3]), ("Prompts and images", [4, 8, 5, 6]), ("Conditions, teacher", [7, 9]),
                   ("Decode and save", [10, 11, 12])],
    },
    "long_video": {
        "title": "Long video with a prompt switch",
        "summary": "489 frames (20 s at 24 fps): 249 frames, then the prompt switches (LongLive re-cache) for 240 "
                   "more; the KV cache stays bounded.",
        "groups": [*HEAD_GROUPS, ("Prompt 1: frames 0-248", [9]), ("Prompt 2 from frame 249", [10, 11, 12]),
                   ("Decode and save", [13, 14, 15])],
    },
    "live_preview_stream": {
        "title": "Live preview with the tiny decoder",
        "summary": "129 frames with the tiny TAEHV decoder showing each chunk as it is made and decoding the "
                   "segment (swap it out for the final render).",
        "groups": [("Models", [1, 2, 3, 9]), ("Prompt and images", [4, 5, 6]), ("Conditions, stream start", [7, 8]),
                   ("Stream, tiny previews", [10]), ("Decode and save", [11, 12, 13])],
    },
    "live_session": {
        "title": "Live session",
        "summary": "Streams into the live node at 24 fps; switch garment and prompt from its widget while it runs; "
                   "the frames are saved and the timeline records the switches.",
        "groups": [("Models", [1, 2, 3, 8]), ("Prompt and images", [4, 5, 6]), ("Conditions", [7]),
                   ("Live stream: switch here", [9]), ("Save", [10, 11])],
    },
    "video_tryon": {
        "title": "Try-on onto a person video",
        "summary": "Dresses the person of a video in garment 1 inside a mask, then switches to garment 2 at frame "
                   "45 (VITON-DiT's task).",
        "description": "Each chunk starts from the video's latents noised to `strength`, only inside the mask. The "
                       "example video is a still image repeated: swap in LoadVideo -> GetVideoComponents and a "
                       "garment mask from a segmentation node.",
        "groups": [*HEAD_GROUPS, ("Person video, mask", [9, 10, 11, 12]),
                   ("Garment 1 on the video", [13, 14]), ("Garment 2 from frame 45", [15, 16, 17]),
                   ("Decode and save", [18, 19, 20])],
    },
    "video_tryon_keyframes": {
        "title": "Try-on onto a long video: keyframes, then fill",
        "summary": "VITON-DiT's interpolated autoregression: every segment's first chunk first (the keyframes see "
                   "each other), then each segment filled from its keyframe.",
        "groups": [*HEAD_GROUPS, ("Person video, mask", [9, 10, 11, 12]), ("Keyframes, then fill", [13]),
                   ("Decode and save", [14, 15, 16])],
    },
    "motion_transfer": {
        "title": "Motion from a driving video",
        "summary": "The stream follows a driving video's motion (its latents noised to strength 0.83 start each "
                   "chunk); appearance comes from the person and garment.",
        "groups": [*HEAD_GROUPS, ("Driving video", [9, 10, 11]), ("Follow its motion", [12, 13]),
                   ("Decode and save", [14, 15, 16])],
    },
    "condition_weighting_stream": {
        "title": "Stream with condition weighting",
        "summary": "CustomCrafter's schedule on the stream: weak attention to person and garment in early steps "
                   "(motion), full in late ones (detail).",
        "groups": [("Models, weighting", [1, 20, 2, 3]), ("Prompt and images", [4, 5, 6]),
                   ("Conditions, stream start", [7, 8]), ("Stream: 81 frames", [9]),
                   ("Decode and save", [10, 11, 12])],
    },
    "condition_weighting_teacher": {
        "title": "Teacher with condition weighting",
        "summary": "The 50-step teacher with CustomCrafter's schedule: weak condition attention early, full late.",
    },
    "local_attention_stream": {
        "title": "Long stream with local attention",
        "summary": "249 frames where each chunk attends to the conditions, the sink and only the 6 nearest latent "
                   "frames: a speed option for long streams.",
        "description": "Its cost against the full window: docs/benchmarks/options.md.",
        "groups": [*HEAD_GROUPS, ("Local attention, k = 6", [9, 10]), ("Decode and save", [11, 12, 13])],
    },
    "native_model_stream": {
        "title": "Stream from a native MODEL (UNETLoader, LoRA, fp8, GGUF)",
        "summary": "The student through ComfyUI's Load Diffusion Model, a LoRA and ModelSamplingSD3: ComfyUI's "
                   "casting, LoRA patches and partial loading apply.",
        "description": "Swap in a GGUF loader the same way. The LoRA file name is a placeholder: pick yours.",
        "groups": [("Native model, LoRA, shift", [20, 21, 22, 1]), ("VAE and text encoder", [2, 3]),
                   ("Prompt and images", [4, 5, 6]), ("Conditions, stream start", [7, 8]),
                   ("Stream: 81 frames", [9]), ("Decode and save", [10, 11, 12])],
    },
}
EXTRAS.update(PROFILE_EXTRAS)
"""Per-workflow extras: a title, a one-line ``summary`` (the template card's thumbnail and the Note's first line),
optionally a longer ``description`` (the Note), and groups ``(title, node ids)``. A workflow without extras still
gets its Note, titles, model entries and layout; the generator refuses a group title wider than its group."""


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m chameleon_core.tools.workflows", description=__doc__.split("\n")[0])
    p.add_argument("--server", default="http://127.0.0.1:8188", help="a running ComfyUI with this pack loaded")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from comfy_cli.workflow_to_api import convert_ui_to_api  # comfy-cli, from PyPI

    object_info = json.load(urllib.request.urlopen(args.server.rstrip("/") + "/object_info"))
    (HERE / "api").mkdir(exist_ok=True)
    used = {k for k, v in object_info.items() if v.get("category", "").startswith("FashionChameleon")}
    for name, build in WORKFLOWS.items():
        spec = build()
        used |= {ntype for ntype, *_ in spec.values()}
        extras = EXTRAS.get(name, {})
        ui = to_ui(spec, object_info, extras)
        (HERE / f"{name}.json").write_text(json.dumps(ui, indent=2) + "\n")
        workflow_layout.thumbnail(ui, HERE / f"{name}.jpg", extras.get("title", name), extras.get("summary", ""))
        api = convert_ui_to_api(ui, object_info)
        (HERE / "api" / f"{name}.json").write_text(json.dumps(api, indent=2) + "\n")
        logger.info("wrote %s: %d nodes, %d links", name, len(ui["nodes"]), len(ui["links"]))
    SNAPSHOT.write_text(json.dumps({k: object_info[k] for k in used}, indent=1, sort_keys=True))
    logger.info("wrote %s: %d node schemas", SNAPSHOT, len(used))


if __name__ == "__main__":
    main()
