"""Open the pack's templates in the real ComfyUI frontend in headless Chromium, the way its template browser opens
them, and report what a user would see.

Run with ComfyUI's interpreter (which has ``playwright``): ``python tests/frontend_check.py URL CHROMIUM NAME...``.
Each template is fetched from ``/api/workflow_templates/<pack>/<name>.json`` and loaded with
``app.loadGraphData(json, true, true, name)`` (what a template card does). Prints one JSON line per template:
``{"name", "nodes", "loaded", "unknown", "errors", "missing_models", "note", "groups", "geometry"}``:

- ``errors``: browser alerts, toasts (the frontend's schema check reports an invalid workflow as an "Alert" toast)
  and console errors about the workflow; ``missing_models``: the rows of the frontend's missing-models dialog;
- ``note``: the Note's text box on screen (``rect``), whether it is drawn (``shown``), its text's height against
  the box's (``text_height``, ``box_height``, graph units) and the zoom;
- ``groups``: each group's title width as the frontend measures it (its font on a canvas) and the group's width;
- ``geometry``: each node's id, position, size as loaded and the size the frontend computes for its sockets and
  widgets (``computeSize``), and the title bar height.

Used by the integration test (no errors, nothing overlapping, the Note readable on load).
"""

from __future__ import annotations

import json
import sys

from playwright.sync_api import sync_playwright

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]
PACK = "comfyui-fashionchameleon"
"""The pack's folder name under custom_nodes: its template category."""
WORKFLOW_WORDS = ("workflow", "zod", "schema", "invalid")


def watch_errors(page) -> list[str]:
    """Start recording browser alerts (dismissed) and console errors about workflows; returns the record."""
    seen: list[str] = []

    def on_dialog(dialog) -> None:
        seen.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("console", lambda m: seen.append(f"console: {m.text}")
            if m.type == "error" and any(w in m.text.lower() for w in WORKFLOW_WORDS) else None)
    return seen


def open_errors(page, seen: list[str]) -> list[str]:
    """What was recorded since the last call, plus the toasts on screen (then closed)."""
    toasts = page.evaluate("""() => {
        const out = [...document.querySelectorAll('.p-toast-message')].map((t) => t.textContent.trim());
        document.querySelectorAll('.p-toast-message .p-toast-close-button').forEach((b) => b.click());
        return out;
    }""")
    found = [*seen, *(f"toast: {t}" for t in toasts)]
    seen.clear()
    return found


def main() -> None:
    url, chromium, names = sys.argv[1], sys.argv[2], sys.argv[3:]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        seen = watch_errors(page)
        page.goto(url)
        page.wait_for_function("window.app && window.app.graph", timeout=180_000)
        page.wait_for_timeout(1500)
        page.keyboard.press("Escape")  # the first-run template dialog
        open_errors(page, seen)
        for name in names:
            result = page.evaluate(
                """async ([pack, name]) => {
                    const wf = await (await fetch(window.app.api.apiURL(`/workflow_templates/${pack}/${name}.json`))).json();
                    await window.app.loadGraphData(wf, true, true, name);
                    await new Promise((r) => setTimeout(r, 800));  // the DOM widgets follow the canvas on its next frames
                    const nodes = window.app.graph._nodes;
                    const note = nodes.find((n) => n.type === "MarkdownNote");
                    const box = note?.widgets?.[0]?.element;
                    const scale = window.app.canvas.ds.scale;
                    let noteInfo = null;
                    if (box) {
                        const r = box.getBoundingClientRect();
                        const style = getComputedStyle(box);
                        const kids = [...(box.querySelector(".ProseMirror") ?? box).children];
                        const bottom = Math.max(...kids.map((c) => c.getBoundingClientRect().bottom));
                        noteInfo = {rect: [r.left, r.top, r.right, r.bottom], scale,
                                    shown: style.display !== "none" && style.visibility !== "hidden" &&
                                           !window.app.canvas.low_quality && r.width > 0,
                                    text: box.innerText.trim().slice(0, 80),
                                    text_height: (bottom - r.top) / scale, box_height: r.height / scale};
                    }
                    const ctx = document.createElement("canvas").getContext("2d");
                    const groups = window.app.graph._groups.map((g) => {
                        ctx.font = `${g.font_size}px ${LiteGraph.GROUP_FONT}`;
                        return {title: g.title, title_width: ctx.measureText(g.title).width + 4, width: g._size[0],
                                font_size: g.font_size};
                    });
                    const dialog = document.querySelector('[role=dialog]');
                    const missing = dialog && /missing/i.test(dialog.textContent)
                        ? [...dialog.querySelectorAll('li, .p-listbox-option')].map((e) => e.textContent.trim()) : [];
                    return {loaded: nodes.length,
                            unknown: nodes.filter(n => !LiteGraph.registered_node_types[n.type]).map(n => n.type),
                            title_height: LiteGraph.NODE_TITLE_HEIGHT, note: noteInfo, groups,
                            missing_models: missing, dialog: !!dialog,
                            geometry: nodes.map(n => ({id: n.id, type: n.type, pos: [n.pos[0], n.pos[1]],
                                                       size: [n.size[0], n.size[1]],
                                                       computed: Array.from(n.computeSize())}))};
                }""",
                [PACK, name],
            )
            page.keyboard.press("Escape")  # a missing-models dialog: closed before the next template
            nodes = len(json.loads(page.evaluate(
                "async ([p, n]) => JSON.stringify((await (await fetch(window.app.api.apiURL("
                "`/workflow_templates/${p}/${n}.json`))).json()).nodes)", [PACK, name])))
            print(json.dumps({"name": name, "nodes": nodes, **result, "errors": open_errors(page, seen)}), flush=True)
        browser.close()


if __name__ == "__main__":
    main()
