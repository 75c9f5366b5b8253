"""How the example workflows look and what they tell: node sizes, a layout with no overlaps, titles, groups, the Note
listing the model files, the model entries ComfyUI's frontend offers to download, and the template thumbnail.

Everything here applies to any graph spec of :mod:`chameleon_core.tools.workflows` (``{id: (type, widgets, links,
pos)}``), derived from the nodes in it: the files from the loader nodes (:data:`MODEL_LOADERS`), image loaders'
titles from their file names, sizes from widget and socket counts. A spec's ``pos`` is a column hint: nodes keep
their order, columns are moved apart and nodes in a column stacked so that no two overlap (:func:`layout`). Groups
and a description are optional per workflow. Not used at run time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..profiles import PROFILES

TITLE_HEIGHT = 30
"""Litegraph draws a node's title bar above ``pos``: a node covers ``[x, y - 30, w, h + 30]``."""
GAP = 40
"""Free space between nodes (besides the title bar)."""
GROUP_PAD = 20
GROUP_TITLE = 40

MODEL_LOADERS: dict[str, tuple[str, str]] = {
    "ChameleonStudentLoader": ("ckpt_name", "diffusion_models"),
    "ChameleonTeacherLoader": ("ckpt_name", "diffusion_models"),
    "ChameleonTinyDecoderLoader": ("decoder_name", "vae_approx"),
    "ChameleonVAELoader": ("vae_name", "vae"),
    "ChameleonPromptEmbeddings": ("embeddings_name", "prompt_embeddings"),
    "VAELoader": ("vae_name", "vae"),
    "CLIPLoader": ("clip_name", "text_encoders"),
    "UNETLoader": ("unet_name", "diffusion_models"),
    "LoraLoaderModelOnly": ("lora_name", "loras"),
}
"""Loader node type -> (the widget naming the file, the ComfyUI models folder it reads)."""
MORE_MODEL_WIDGETS: dict[str, tuple[tuple[str, str], ...]] = {
    "ChameleonStudentLoader": (("lora_name", "loras"),),
}
"""Further file widgets of a loader (a LoRA merged on loading); ``none`` is no file."""

MODEL_URLS: dict[str, str] = {
    "wan2.2_vae.safetensors":
        "https://huggingface.co/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/vae/wan2.2_vae.safetensors",
    "wan_2.1_vae.safetensors":
        "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/vae/wan_2.1_vae.safetensors",
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors":
        "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/text_encoders/"
        "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
    "umt5_xxl_fp16.safetensors":
        "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/text_encoders/"
        "umt5_xxl_fp16.safetensors",
    "taew2_2.safetensors": "https://github.com/madebyollin/taehv/raw/main/safetensors/taew2_2.safetensors",
    "taew2_1.safetensors": "https://github.com/madebyollin/taehv/raw/main/safetensors/taew2_1.safetensors",
}
"""Public files and their download addresses (node ``properties.models``, as ComfyUI's templates carry them)."""
MODEL_URLS.update({f.name: f.url for prof in PROFILES.values() for f in prof.files})
PUBLISHED = {f.name: prof for prof in PROFILES.values() for f in prof.files}
"""The public students' files (their published names) -> their profile."""

DEMO_COMMAND = "python -m chameleon_core.tools.demo_models --comfyui /path/to/ComfyUI"
NOT_PUBLIC = ("The FashionChameleon student and teacher weights are not public. What loads instead: the demo's "
              f"small random models (`{DEMO_COMMAND}`, then the `demo` template), a student you train with the pack's "
              "recipe (README, Training), or a public causal Wan student (LongLive 2.0 for Wan2.2; Self-Forcing / "
              "CausVid for Wan2.1 with the Wan2.1 VAE).")
PUBLIC_STUDENT = ("Every file here is public (the addresses above; the README's model table lists them). The "
                  "FashionChameleon student and teacher weights are not public: this workflow streams a public causal "
                  "student with its own loop, text- or image-to-video, without a person or garment.")
DEMO_FILES = ("fashionchameleon_demo_",)
"""File name prefixes the demo command writes."""


def where_to_get(name: str) -> str:
    """Where a model file comes from, in a few words."""
    if name in PUBLISHED:
        return f"{MODEL_URLS[name]}, {PUBLISHED[name].title}"
    if name in MODEL_URLS:
        return MODEL_URLS[name]
    if name.startswith(DEMO_FILES):
        return f"written by `{DEMO_COMMAND}` (random weights)"
    if "fashionchameleon" in name:
        return "not public (see below)"
    return "see the README, Models"


# -------------------------------------------------------------------------------------------------------------------
# Sizes and layout
# -------------------------------------------------------------------------------------------------------------------

WIDE = {"CLIPTextEncode": 420, "MarkdownNote": 460, "ChameleonLiveStream": 420}
EXTRA_HEIGHT = {
    "LoadImage": 300,          # the image preview
    "SaveVideo": 320,          # the video preview after a run
    "SaveImage": 320,
    "PreviewImage": 320,
    "CLIPTextEncode": 110,     # multi-line text box
    "ChameleonLiveStream": 420,  # the live view widget
}


def node_size(ntype: str, sockets: int, widgets: int) -> tuple[int, int]:
    """A conservative body size ``(w, h)`` (title bar excluded): 22 px per socket row, 28 per widget, plus previews
    and text boxes. At least what the frontend computes for these nodes (the integration test checks)."""
    return WIDE.get(ntype, 340), 16 + 22 * sockets + 28 * widgets + EXTRA_HEIGHT.get(ntype, 0)


def rect(node: Mapping) -> tuple[float, float, float, float]:
    """The area a UI node covers, title bar included: ``(x0, y0, x1, y1)``."""
    (x, y), (w, h) = node["pos"], node["size"]
    return x, y - TITLE_HEIGHT, x + w, y + h


def overlaps(nodes: Iterable[Mapping]) -> list[tuple[int, int]]:
    """Pairs of node ids whose areas (:func:`rect`) intersect."""
    items = [(n["id"], rect(n)) for n in nodes]
    out = []
    for i, (a, ra) in enumerate(items):
        for b, rb in items[i + 1 :]:
            if ra[0] < rb[2] and rb[0] < ra[2] and ra[1] < rb[3] and rb[1] < ra[3]:
                out.append((a, b))
    return out


def layout(nodes: list[dict], top: float = 0) -> None:
    """Place nodes in place: a column per distinct hint ``x``, columns left to right at least a node width plus
    :data:`GAP` apart, nodes in a column stacked in hint-``y`` order with no overlap."""
    columns: dict[float, list[dict]] = {}
    for n in nodes:
        columns.setdefault(n["pos"][0], []).append(n)
    x = None
    for hint_x in sorted(columns):
        col = sorted(columns[hint_x], key=lambda n: n["pos"][1])
        x = hint_x if x is None else max(hint_x, x)
        y = top
        for n in col:
            y = max(n["pos"][1], y)
            n["pos"] = [x, y]
            y += n["size"][1] + TITLE_HEIGHT + GAP
        x += max(n["size"][0] for n in col) + GAP


# -------------------------------------------------------------------------------------------------------------------
# Titles, model entries, groups, the Note
# -------------------------------------------------------------------------------------------------------------------


def title(ntype: str, widgets: Mapping) -> str | None:
    """A title that says what an image loader holds ("Person", "Garment 2"), from its file name; None otherwise."""
    if ntype != "LoadImage":
        return None
    stem = Path(str(widgets.get("image", ""))).stem.lower()
    if "reference" in stem or "person" in stem:
        return "Person"
    if "first" in stem:
        return "First frame"
    if m := re.search(r"garment[_ -]?(\d+)", stem):
        return f"Garment {m.group(1)}"
    return "Image"


def model_entries(ntype: str, widgets: Mapping) -> list[dict]:
    """The node's ``properties.models``: the file it loads, its folder and, when public, its download address."""
    if ntype not in MODEL_LOADERS:
        return []
    out = []
    for widget, folder in (MODEL_LOADERS[ntype], *MORE_MODEL_WIDGETS.get(ntype, ())):
        name = widgets.get(widget)
        if not name or name == "none":
            continue
        entry = {"name": name, "directory": folder}
        if name in MODEL_URLS:
            entry["url"] = MODEL_URLS[name]
        out.append(entry)
    return out


def files_needed(nodes: Iterable[Mapping]) -> list[tuple[str, str]]:
    """``(file, folder)`` of every loader node, in graph order, without repeats."""
    seen: dict[tuple[str, str], None] = {}
    for n in nodes:
        for m in n.get("properties", {}).get("models", []):
            seen[(m["name"], m["directory"])] = None
    return list(seen)


def note_text(title_: str, description: str, files: list[tuple[str, str]], images: list[str]) -> str:
    """The Markdown Note every template carries: what it does, the files it needs, where they go and come from."""
    lines = [f"## {title_}", "", description, "", "**Model files** (folder under `ComfyUI/models/`: file, from):", ""]
    lines += [f"- `{folder}/`: `{name}`, {where_to_get(name)}" for name, folder in files]
    if images:
        lines += ["", "**Images** (`ComfyUI/input/`): " + ", ".join(f"`{i}`" for i in images)]
    public = any(name in PUBLISHED for name, _ in files)
    lines += ["", PUBLIC_STUDENT if public else NOT_PUBLIC, "",
              "A missing file is listed by name at the first Run (all of them in one message)."]
    return "\n".join(lines)


def group_box(nodes: Mapping[int, Mapping], ids: Iterable[int]) -> list[float]:
    """``[x, y, w, h]`` of a group around ``ids`` (their areas, padding, and the group's title band)."""
    rects = [rect(nodes[i]) for i in ids]
    x0, y0 = min(r[0] for r in rects) - GROUP_PAD, min(r[1] for r in rects) - GROUP_PAD - GROUP_TITLE
    x1, y1 = max(r[2] for r in rects) + GROUP_PAD, max(r[3] for r in rects) + GROUP_PAD
    return [x0, y0, x1 - x0, y1 - y0]


# -------------------------------------------------------------------------------------------------------------------
# Thumbnail
# -------------------------------------------------------------------------------------------------------------------

COLOURS = {"group": (58, 74, 96), "node": (53, 53, 53), "title": (34, 34, 34), "ours": (70, 52, 96),
           "note": (64, 80, 48), "text": (230, 230, 230), "bg": (24, 24, 24), "link": (160, 160, 90)}


def thumbnail(ui: dict, path: Path, title_: str, size: tuple[int, int] = (512, 384)) -> None:
    """A JPEG picture of the graph (groups, nodes with their titles, links) with the template's title: what
    ComfyUI's template browser shows beside a custom node's template (``<name>.jpg``)."""
    from PIL import Image, ImageDraw

    nodes = {n["id"]: n for n in ui["nodes"]}
    boxes = [rect(n) for n in nodes.values()] + [(g["bounding"][0], g["bounding"][1],
                                                  g["bounding"][0] + g["bounding"][2],
                                                  g["bounding"][1] + g["bounding"][3]) for g in ui["groups"]]
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    band = 40
    scale = min((size[0] - 16) / (x1 - x0), (size[1] - band - 16) / (y1 - y0))

    def at(x: float, y: float) -> tuple[float, float]:
        return 8 + (x - x0) * scale, band + 8 + (y - y0) * scale

    img = Image.new("RGB", size, COLOURS["bg"])
    draw = ImageDraw.Draw(img)
    for g in ui["groups"]:
        gx, gy, gw, gh = g["bounding"]
        draw.rectangle([*at(gx, gy), *at(gx + gw, gy + gh)], fill=COLOURS["group"])
    for link in ui["links"]:
        a, b = nodes[link[1]], nodes[link[3]]
        ra, rb = rect(a), rect(b)
        draw.line([at(ra[2], ra[1] + 40), at(rb[0], rb[1] + 40)], fill=COLOURS["link"], width=1)
    for n in nodes.values():
        r = rect(n)
        fill = (COLOURS["note"] if n["type"] == "MarkdownNote" else
                COLOURS["ours"] if n["type"].startswith("Chameleon") else COLOURS["node"])
        draw.rectangle([*at(r[0], r[1]), *at(r[2], r[3])], fill=fill, outline=COLOURS["title"])
    draw.text((10, 12), title_, fill=COLOURS["text"])
    img.save(path, "JPEG", quality=85)
