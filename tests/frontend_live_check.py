"""Drive the live widget in the real ComfyUI frontend (headless Chromium) as a user does: open a live workflow, press
Run, see frames in the node's view, pick a garment and press Switch garment, see frames of the switched chunks, Stop.

Run with ComfyUI's interpreter (which has ``playwright``):
``python tests/frontend_live_check.py URL CHROMIUM OPTIONS_JSON``. OPTIONS_JSON:

- ``template``: a template name, opened through the template browser (the Templates button in the sidebar, the
  pack's category, the card); or ``workflow``: a workflow file loaded directly, with ``settings`` (node type ->
  widget values to set, e.g. the tiny checkpoints and size);
- ``garment``: the input image to switch to;
- ``drop_frames_first``: the page drops the first seconds of ``chameleon.live.frame`` messages (as a stale page or
  another tab would not get them): the widget must say that no frames arrive, then show frames once they do;
- ``screenshot``: a PNG path for a picture of the page while frames play.

Prints one JSON line with what happened. Used by the integration test.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from frontend_check import FLAGS, PACK, open_errors, watch_errors

NODE = "ChameleonLiveStream"


def _open_template(page, name: str) -> None:
    """Templates button (unless the first-run dialog is already open) -> the pack's category -> the card."""
    page.wait_for_timeout(1500)
    if not page.locator("[role=dialog]").count():
        page.locator(".templates-tab-button").click()
    page.get_by_text(PACK, exact=True).click()
    page.get_by_text(name, exact=True).first.click()
    page.wait_for_function(f"window.app.graph._nodes.some((n) => n.type === '{NODE}')", timeout=60_000)
    page.wait_for_timeout(1000)


def main() -> None:
    url, chromium, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    out: dict = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        errors = watch_errors(page)
        page.goto(url)
        page.wait_for_function("window.app && window.app.graph", timeout=180_000)
        if options.get("drop_frames_first"):  # frames dispatched to the page are swallowed until the flag is cleared
            page.evaluate("""() => {
                window.__dropFrames = true;
                const dispatch = EventTarget.prototype.dispatchEvent;
                EventTarget.prototype.dispatchEvent = function (e) {
                    return e.type === "chameleon.live.frame" && window.__dropFrames ? true : dispatch.call(this, e);
                };
            }""")
        # 1. Open the workflow (through the template browser when a template is named).
        if options.get("template"):
            _open_template(page, options["template"])
        else:
            page.wait_for_timeout(1500)
            page.keyboard.press("Escape")  # the first-run template dialog
            page.evaluate(
                """async ([wf, settings]) => {
                    await window.app.loadGraphData(wf);
                    for (const node of window.app.graph._nodes) {
                        for (const [name, value] of Object.entries(settings[node.type] ?? {})) {
                            const w = node.widgets?.find((w) => w.name === name);
                            if (w) w.value = value;
                        }
                    }
                }""",
                [json.loads(Path(options["workflow"]).read_text()), options.get("settings", {})],
            )
        for _ in range(3):  # the missing-models dialog of a workflow loaded before its file names were changed
            if not page.locator("[role=dialog]").count():
                break
            page.keyboard.press("Escape")
            page.wait_for_timeout(500)
        live_id = page.evaluate(f"String(window.app.graph._nodes.find((n) => n.type === '{NODE}').id)")
        node = f"window.app.graph.getNodeById({live_id})"
        root = f"{node}.widgets.find((w) => w.name === 'chameleon_live').element"
        out["loaded"] = {"live": live_id, "widget": page.evaluate(f"!!{node}.chameleonLive"),
                         "errors": open_errors(page, errors)}
        # 2. Run, as the user does: the Run button.
        page.get_by_role("button", name="Run", exact=True).first.click()
        if options.get("drop_frames_first"):
            page.wait_for_function(f"{node}.chameleonLive.problem.includes('no frames reached this page')",
                                   timeout=120_000)
            out["message_without_frames"] = page.evaluate(f"{root}.querySelector('.chameleon-live-message').textContent")
            out["received_while_dropped"] = page.evaluate(f"{node}.chameleonLive.received")
            page.evaluate("window.__dropFrames = false")
        # 3. Frames appear in the node's view while the prompt runs.
        page.wait_for_function(f"{node}.chameleonLive.session && {node}.chameleonLive.received > 3", timeout=300_000)
        out["session"] = page.evaluate(f"{node}.chameleonLive.session")
        out["shown_before_switch"] = page.evaluate(f"{node}.chameleonLive.received")
        out["has_image"] = page.evaluate(f"{root}.querySelector('img.chameleon-live-frame').src"
                                         ".startsWith('data:image/jpeg')")
        out["message_with_frames"] = page.evaluate(f"{root}.querySelector('.chameleon-live-message').textContent")
        # ComfyUI's own preview is never drawn on the node (it would sit behind the widget's controls), and the
        # controls are on top where they are drawn.
        out["comfy_preview"] = page.evaluate(
            f"""(() => {{ const n = {node};
                const store = window.app.nodePreviewImages ?? {{}};
                return {{imgs: (n.imgs ?? []).length, preview: !!store[n.id] || !!store[String(n.id)]}}; }})()""")
        out["controls_on_top"] = page.evaluate(
            f"""(() => [...{root}.querySelectorAll('button, select')].map((c) => {{
                const r = c.getBoundingClientRect();
                const x = r.left + r.width / 2, y = r.top + r.height / 2;
                const inside = x >= 0 && y >= 0 && x < innerWidth && y < innerHeight;
                return !inside || document.elementFromPoint(x, y) === c || c.contains(document.elementFromPoint(x, y));
            }}).every(Boolean))()""")
        if options.get("screenshot"):
            page.screenshot(path=options["screenshot"])
        # 4. Pick the garment in the widget and press Switch garment.
        garment = options["garment"]
        page.evaluate(
            f"""async () => {{
                const picker = {root}.querySelector("select");
                const deadline = Date.now() + 30000;
                while (![...picker.options].some((o) => o.value === {json.dumps(garment)}) && Date.now() < deadline) {{
                    await new Promise((r) => setTimeout(r, 200));
                }}
                picker.value = {json.dumps(garment)};
                [...{root}.querySelectorAll("button")].find((b) => b.textContent === "Switch garment").click();
            }}"""
        )
        # 5. The switch lands in the session's timeline, and frames of the chunks after it arrive in the view.
        deadline = time.time() + 300
        status: dict = {}
        while time.time() < deadline:
            status = page.evaluate(
                f"""async () => (await (await window.app.api.fetchApi(
                    "/chameleon/live/" + encodeURIComponent({json.dumps(out["session"])}))).json())"""
            )
            if any(s.get("kind") == "garment" for s in status.get("timeline", [])):
                break
            time.sleep(0.3)
        out["switches"] = status.get("timeline", [])
        landed = next((s["chunk"] for s in out["switches"] if s.get("kind") == "garment"), None)
        if landed is not None:  # a frame of chunk index `landed` carries chunk = landed + 1 (chunks made)
            page.wait_for_function(f"{node}.chameleonLive.frameChunk > {landed}", timeout=120_000)
            out["frame_chunk_after_switch"] = page.evaluate(f"{node}.chameleonLive.frameChunk")
        out["message_after_switch"] = page.evaluate(f"{root}.querySelector('.chameleon-live-message').textContent")
        # 6. Stop from the widget; the session ends and its frames were all shown.
        page.evaluate(f"""() => [...{root}.querySelectorAll("button")].find((b) => b.textContent === "Stop").click()""")
        page.wait_for_function(f"!{node}.chameleonLive.session", timeout=300_000)
        page.wait_for_timeout(1500)
        out["shown"] = page.evaluate(f"{node}.chameleonLive.received")
        out["final"] = page.evaluate(
            f"""async () => (await (await window.app.api.fetchApi(
                "/chameleon/live/" + encodeURIComponent({json.dumps(out["session"])}))).json())""")
        out["errors"] = open_errors(page, errors)
        browser.close()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
