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

REPOSITORY = "https://github.com/fashionchameleon/comfyui-fashionchameleon"
"""The pack's repository (pyproject.toml's ``Repository``)."""
PROJECT_PAGE = "https://arxiv.org/abs/2605.15824"
"""FashionChameleon's project page (the paper): the address of the weights that are not public."""
DEMO_FOLDER = "demo/models"
"""Where the pack ships the demo's model files (``chameleon_core.tools.demo_models``)."""
NOT_PUBLIC = ("The FashionChameleon student and teacher weights are not public. What loads instead: the pack's demo "
              "files (the `demo`, `demo_live` and `demo_switch_chain` templates, nothing to download), a student you "
              "train with the pack's recipe (docs/training.md), or a public causal Wan student (LongLive 2.0 for "
              "Wan2.2; Self-Forcing / CausVid for Wan2.1 with the Wan2.1 VAE).")
PUBLIC_STUDENT = ("Every file here is public (the addresses above; docs/models.md lists them). The FashionChameleon "
                  "student and teacher weights are not public: this workflow streams a public causal student with its "
                  "own loop, text- or image-to-video, without a person or garment.")
DEMO_FILES = ("fashionchameleon_demo_",)
"""File name prefixes of the demo files the pack ships."""
PLACEHOLDERS = {"your_": f"{REPOSITORY}/blob/main/docs/nodes.md#native-models-unetloader-lora-fp8-gguf-comfyuis-attention"}
"""File name prefixes of example names the user replaces, and the page that says what to pick."""


def model_url(name: str, folder: str) -> str:
    """Every model entry's ``url`` (the frontend's workflow schema requires one): the public file's download address,
    the shipped demo file in the repository, a placeholder's documentation, or the project page of the files that
    are not public."""
    if name in MODEL_URLS:
        return MODEL_URLS[name]
    if name.startswith(DEMO_FILES):
        return f"{REPOSITORY}/raw/main/{DEMO_FOLDER}/{folder}/{name}"
    for prefix, page in PLACEHOLDERS.items():
        if name.startswith(prefix):
            return page
    return PROJECT_PAGE


def where_to_get(name: str, folder: str = "") -> str:
    """Where a model file comes from, in a few words."""
    if name in PUBLISHED:
        return f"{MODEL_URLS[name]}, {PUBLISHED[name].title}"
    if name in MODEL_URLS:
        return MODEL_URLS[name]
    if name.startswith(DEMO_FILES):
        return f"ships with the pack (`{DEMO_FOLDER}/{folder}/`), nothing to download"
    if any(name.startswith(prefix) for prefix in PLACEHOLDERS):
        return "an example name: pick your own file"
    if "fashionchameleon" in name:
        return "not public (see below)"
    return "see docs/models.md"


# -------------------------------------------------------------------------------------------------------------------
# Sizes and layout
# -------------------------------------------------------------------------------------------------------------------

WIDE = {"CLIPTextEncode": 420, "MarkdownNote": 460, "ChameleonLiveStream": 420}
NOTE_WIDTH = (900, 1500)
"""The Note's width range: as wide as the graph under it, within these bounds (a wide Note is a short one)."""
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
    """The node's ``properties.models``: the file it loads, its folder and an address (:func:`model_url`)."""
    if ntype not in MODEL_LOADERS:
        return []
    out = []
    for widget, folder in (MODEL_LOADERS[ntype], *MORE_MODEL_WIDGETS.get(ntype, ())):
        name = widgets.get(widget)
        if not name or name == "none":
            continue
        out.append({"name": name, "url": model_url(name, folder), "directory": folder})
    return out


def files_needed(nodes: Iterable[Mapping]) -> list[tuple[str, str]]:
    """``(file, folder)`` of every loader node, in graph order, without repeats."""
    seen: dict[tuple[str, str], None] = {}
    for n in nodes:
        for m in n.get("properties", {}).get("models", []):
            seen[(m["name"], m["directory"])] = None
    return list(seen)


def note_text(title_: str, summary: str, description: str, files: list[tuple[str, str]], images: list[str],
              demo_note: str = "") -> str:
    """The Markdown Note every template carries: what it does, the files it needs, where they go and come from.
    ``demo_note``: what the shipped demo weights are (for templates that load only demo files)."""
    demo = bool(files) and all(name.startswith(DEMO_FILES) for name, _ in files)
    lines = [f"## {title_}", "", summary]
    if description:
        lines += ["", description]
    if demo:
        lines += ["", "**Model files**: they ship with the pack and ComfyUI finds them; nothing to download.", ""]
    else:
        lines += ["", "**Model files** (folder under `ComfyUI/models/`: file, from):", ""]
    lines += [f"- `{folder}/`: `{name}`, {where_to_get(name, folder)}" for name, folder in files]
    if images:
        where = "copied into `ComfyUI/input/` when the pack loads" if demo else "`ComfyUI/input/`"
        lines += ["", f"**Images** ({where}): " + ", ".join(f"`{i}`" for i in images)]
    if demo and demo_note:
        lines += ["", demo_note]
    public = any(name in PUBLISHED for name, _ in files)
    lines += ["", PUBLIC_STUDENT if public else NOT_PUBLIC, "",
              "A missing file is listed by name at the first Run (all of them in one message)."]
    return "\n".join(lines)


NOTE_FONT = (10, 5.3, 11)
"""The frontend's Markdown Note text: 10 px font, about 5.3 px a character on average, 11 px a line."""


def note_height(text: str, width: float) -> int:
    """The Note's height for ``text`` at ``width``: title bar, padding, each line wrapped at the Note's text width,
    paragraph gaps (a little more than the frontend needs: the integration test checks the text fits)."""
    _, char, line = NOTE_FONT
    per_line = max(1, int((width - 40) / char))
    height = 34
    for block in text.split("\n\n"):
        for row in block.split("\n"):
            height += (22 if row.startswith("#") else line) * max(1, -(-len(row) // per_line))
        height += 9
    return height + 10


GROUP_FONT_SIZE = 22
"""Group titles' font size (px): the frontend draws them in Arial at ``LGraphGroup.padding`` (4 px) from the left."""
GROUP_TITLE_PAD = 4
ARIAL_WIDTHS = dict(zip(
    " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~",
    (278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, *(556,) * 10, 278, 278, 584, 584,
     584, 556, 1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778, 667, 778, 722, 667,
     611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556, 556, 278, 556, 556, 222,
     222, 500, 222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584)))
"""Arial's (= Helvetica's) advance widths per character in 1/1000 em: the width a title is drawn at."""


def group_title_width(text: str, font_size: float = GROUP_FONT_SIZE) -> float:
    """The width a group title takes, padding included (characters outside the table count a full em)."""
    return GROUP_TITLE_PAD + font_size * sum(ARIAL_WIDTHS.get(c, 1000) for c in text) / 1000


NOTE_SCREEN = (80, 70)
"""Where the Note's top-left corner lands on screen when a template loads (clear of the sidebar and menu)."""
VIEW_SCALE = 0.8
"""The zoom a template opens at: the Note's text is drawn (the frontend hides DOM text below 8 / 14 = 0.57)."""


def view_on(note_pos: list[float], scale: float = VIEW_SCALE) -> dict:
    """The ``extra.ds`` view a template opens with: the Note (title bar included) at :data:`NOTE_SCREEN`."""
    x, y = note_pos[0], note_pos[1] - TITLE_HEIGHT
    return {"scale": scale, "offset": [NOTE_SCREEN[0] / scale - x, NOTE_SCREEN[1] / scale - y]}


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
           "note": (64, 80, 48), "text": (240, 240, 240), "summary": (200, 210, 220), "bg": (24, 24, 24),
           "link": (160, 160, 90)}


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow's scalable default font (needs FreeType)
    except (TypeError, AttributeError, OSError):
        return ImageFont.load_default()


def _wrap(draw, text: str, font, width: float) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return [*lines, line] if line else lines


def thumbnail(ui: dict, path: Path, title_: str, summary: str = "", size: tuple[int, int] = (512, 384)) -> None:
    """A JPEG card for ComfyUI's template browser (``<name>.jpg`` beside a custom node's template): the template's
    title and one-line summary in large type (the frontend's card shows only the file name as text), above a
    picture of the graph (groups, nodes, links)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, COLOURS["bg"])
    draw = ImageDraw.Draw(img)
    title_font, text_font = _font(30), _font(21)
    y = 14
    for line in _wrap(draw, title_, title_font, size[0] - 28)[:2]:
        draw.text((14, y), line, fill=COLOURS["text"], font=title_font)
        y += 36
    y += 4
    for line in _wrap(draw, summary, text_font, size[0] - 28)[:4]:
        draw.text((14, y), line, fill=COLOURS["summary"], font=text_font)
        y += 26
    band = y + 10

    nodes = {n["id"]: n for n in ui["nodes"]}
    boxes = [rect(n) for n in nodes.values()] + [(g["bounding"][0], g["bounding"][1],
                                                  g["bounding"][0] + g["bounding"][2],
                                                  g["bounding"][1] + g["bounding"][3]) for g in ui["groups"]]
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    scale = min((size[0] - 16) / (x1 - x0), (size[1] - band - 8) / (y1 - y0))

    def at(x: float, y: float) -> tuple[float, float]:
        return 8 + (x - x0) * scale, band + (y - y0) * scale

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
    img.save(path, "JPEG", quality=88)
