"""A workflow graph spec ``{id: (type, widgets, links, pos)}`` as the litegraph document the ComfyUI frontend saves
and loads: widget values in ``/object_info``'s order, links, node sizes and titles, model entries on the loaders, a
layout with no overlaps (:mod:`.workflow_layout`), a Note listing the files, and the groups. Used by
:mod:`.workflows` (``python -m chameleon_core.tools.workflows``)."""

from __future__ import annotations

import uuid

from . import demo_models, workflow_layout

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _is_widget(spec: list) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _inputs(info: dict) -> list[tuple[str, list]]:
    order = info.get("input_order", {})
    out = []
    for section in ("required", "optional"):
        for name in order.get(section, info["input"].get(section, {}).keys()):
            out.append((name, info["input"][section][name]))
    return out


def to_ui(spec: dict, object_info: dict, extras: dict | None = None) -> dict:
    """Build the litegraph document for a spec ``{id: (type, widgets, links, pos)}``: nodes sized, titled and laid
    out with no overlaps, model entries on the loaders, a Note listing the files, and the extras' groups."""
    extras = extras or {}
    links, nodes = [], []
    outgoing: dict[tuple[int, int], list[int]] = {}
    for order, (nid, (ntype, widgets, wired, pos)) in enumerate(sorted(spec.items())):
        info = object_info[ntype]
        inputs, values = [], []
        for name, ispec in _inputs(info):
            if _is_widget(ispec):
                opts = ispec[1] if len(ispec) > 1 else {}
                values.append(widgets.get(name, opts.get("default")))
                if opts.get("control_after_generate"):
                    values.append("fixed")
                if opts.get("image_upload"):
                    values.append("image")
                continue
            link = None
            if name in wired:
                src, slot = wired[name]
                link = len(links) + 1
                links.append([link, src, slot, nid, len(inputs), object_info[spec[src][0]]["output"][slot]])
                outgoing.setdefault((src, slot), []).append(link)
            inputs.append({"name": name, "type": ispec[0], "link": link})
        unknown = set(widgets) - {n for n, s in _inputs(info) if _is_widget(s)}
        if unknown:
            raise ValueError(f"node {nid} ({ntype}): no widgets named {sorted(unknown)}")
        properties: dict = {"Node name for S&R": ntype}
        if models := workflow_layout.model_entries(ntype, widgets):
            properties["models"] = models
        node = {
            "id": nid, "type": ntype, "pos": list(pos),
            "size": list(workflow_layout.node_size(ntype, max(len(inputs), len(info["output"])), len(values))),
            "flags": {}, "order": order, "mode": 0, "inputs": inputs,
            "outputs": [{"name": oname, "type": otype, "links": None, "slot_index": i}
                        for i, (otype, oname) in enumerate(zip(info["output"], info["output_name"]))],
            "properties": properties, "widgets_values": values,
        }
        if title := workflow_layout.title(ntype, widgets):
            node["title"] = title
        nodes.append(node)
    for node in nodes:
        for i, out in enumerate(node["outputs"]):
            out["links"] = outgoing.get((node["id"], i), [])
    groups = extras.get("groups", [])
    # Groups' title bands need room between the columns' tops and the Note.
    workflow_layout.layout(nodes, top=workflow_layout.GROUP_TITLE + workflow_layout.GROUP_PAD if groups else 0)
    by_id = {n["id"]: n for n in nodes}
    title = extras.get("title", "FashionChameleon workflow")
    summary = extras.get("summary", "")
    images = [spec[i][1]["image"] for i in sorted(spec) if spec[i][0] == "LoadImage"]
    text = workflow_layout.note_text(title, summary, extras.get("description", ""),
                                     workflow_layout.files_needed(nodes), images, demo_models.weights_note())
    note_id = max(spec) + 1
    left = min(workflow_layout.rect(n)[0] for n in nodes)
    right = max(workflow_layout.rect(n)[2] for n in nodes)
    note_w = int(min(max(right - left, workflow_layout.NOTE_WIDTH[0]), workflow_layout.NOTE_WIDTH[1]))
    note_h = workflow_layout.note_height(text, note_w)
    top = min(workflow_layout.rect(n)[1] for n in nodes) - (workflow_layout.GROUP_TITLE + 2 * workflow_layout.GROUP_PAD
                                                           if groups else 0)
    # The Note sits above the graph, as wide as it (so it is short): on load (extra.ds) it is at the screen's top
    # left with the graph's first columns under it.
    note_pos = [left, top - workflow_layout.GAP - note_h]
    nodes.append({"id": note_id, "type": "MarkdownNote", "title": "Read me: files and where to get them",
                  "pos": note_pos, "size": [note_w, note_h], "flags": {},
                  "order": len(nodes), "mode": 0, "inputs": [], "outputs": [], "properties": {},
                  "widgets_values": [text], "color": "#432", "bgcolor": "#653"})
    ui_groups = []
    for i, (g_title, ids) in enumerate(groups):
        box = workflow_layout.group_box(by_id, ids)
        if (wide := workflow_layout.group_title_width(g_title)) > box[2]:
            raise ValueError(f"{title}: group title {g_title!r} is about {wide:.0f} px wide at "
                             f"{workflow_layout.GROUP_FONT_SIZE} px, its group {box[2]:.0f} px: shorten it")
        ui_groups.append({"id": i + 1, "title": g_title, "bounding": box, "color": "#3f789e",
                          "font_size": workflow_layout.GROUP_FONT_SIZE, "flags": {}})
    clash = workflow_layout.overlaps(nodes)
    if clash:
        raise ValueError(f"{title}: overlapping nodes {clash}")
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"fashionchameleon/{title}/{sorted(spec)}")),
        "revision": 0, "last_node_id": note_id, "last_link_id": len(links), "nodes": nodes, "links": links,
        "groups": ui_groups, "config": {},
        "extra": {"ds": workflow_layout.view_on(note_pos),
                  "info": {"name": title, "description": summary}},
        "version": 0.4,
    }
