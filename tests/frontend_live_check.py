"""Drive the live widget in the real ComfyUI frontend (headless Chromium): queue the live workflow, see frames in the
node's view, press Switch garment, then Stop.

Run with ComfyUI's interpreter (which has ``playwright``):
``python tests/frontend_live_check.py URL CHROMIUM WORKFLOW.json SETTINGS_JSON``, where SETTINGS_JSON maps node
types to widget values to set (the tiny checkpoints and size). Prints one JSON line with what happened. Used by the
integration test.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from frontend_check import FLAGS

NODE = "ChameleonLiveStream"


def main() -> None:
    url, chromium, workflow, settings = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    out: dict = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        page.goto(url)
        page.wait_for_function("window.app && window.app.graph", timeout=180_000)
        # 1. Load the live workflow, point it at the tiny files, queue it.
        out["loaded"] = page.evaluate(
            """async ([wf, settings]) => {
                await window.app.loadGraphData(wf);
                for (const node of window.app.graph._nodes) {
                    for (const [name, value] of Object.entries(settings[node.type] ?? {})) {
                        const w = node.widgets?.find((w) => w.name === name);
                        if (w) w.value = value;
                    }
                }
                const live = window.app.graph._nodes.find((n) => n.type === "%s");
                await window.app.queuePrompt(0);
                return {live: String(live.id), widget: !!live.chameleonLive};
            }""" % NODE,
            [json.loads(Path(workflow).read_text()), settings],
        )
        live_id = out["loaded"]["live"]
        node = f"window.app.graph.getNodeById({live_id})"
        # 2. Frames appear in the node's view while the prompt runs.
        page.wait_for_function(f"{node}.chameleonLive.session && {node}.chameleonLive.shown > 3", timeout=300_000)
        out["session"] = page.evaluate(f"{node}.chameleonLive.session")
        out["shown_before_switch"] = page.evaluate(f"{node}.chameleonLive.shown")
        out["has_image"] = page.evaluate(f"!!document.querySelector('img.chameleon-live-frame')?.src")
        # 3. Pick a garment in the widget and press Switch garment.
        page.evaluate(
            f"""async () => {{
                const root = {node}.widgets.find((w) => w.name === "chameleon_live").element;
                const picker = root.querySelector("select");
                const deadline = Date.now() + 30000;
                while (![...picker.options].some((o) => o.value === "garment2.png") && Date.now() < deadline) {{
                    await new Promise((r) => setTimeout(r, 200));
                }}
                picker.value = "garment2.png";
                [...root.querySelectorAll("button")].find((b) => b.textContent === "Switch garment").click();
            }}"""
        )
        # 4. The switch shows in the session's timeline; then Stop from the widget.
        deadline = time.time() + 300
        status: dict = {}
        while time.time() < deadline:
            status = page.evaluate(
                f"""async () => (await (await window.app.api.fetchApi(
                    "/chameleon/live/" + encodeURIComponent({json.dumps(out["session"])}))).json())"""
            )
            if any(s.get("kind") == "garment" for s in status.get("timeline", [])):
                break
            time.sleep(0.5)
        out["switches"] = status.get("timeline", [])
        out["message_after_switch"] = page.evaluate(
            f"""{node}.widgets.find((w) => w.name === "chameleon_live").element.lastElementChild.textContent"""
        )
        page.evaluate(
            f"""() => [...{node}.widgets.find((w) => w.name === "chameleon_live").element.querySelectorAll("button")]
                .find((b) => b.textContent === "Stop").click()"""
        )
        page.wait_for_function(f"!{node}.chameleonLive.session", timeout=300_000)
        out["shown"] = page.evaluate(f"{node}.chameleonLive.shown")
        browser.close()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
