"""Load workflows into the real ComfyUI frontend in headless Chromium and report unregistered node types.

Run with ComfyUI's interpreter (which has ``playwright``): ``python tests/frontend_check.py URL CHROMIUM WF.json...``.
Prints one JSON line per workflow: ``{"name", "nodes", "loaded", "unknown", "geometry"}``, where ``geometry`` lists
each node's id, position, size as loaded and the size the frontend computes for its sockets and widgets
(``computeSize``), and the title bar height. Used by the integration test (unknown nodes, overlaps).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]


def main() -> None:
    url, chromium, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        page.goto(url)
        page.wait_for_function("window.app && window.app.graph", timeout=180_000)
        for file in files:
            workflow = json.loads(Path(file).read_text())
            result = page.evaluate(
                """async (wf) => {
                    await window.app.loadGraphData(wf);
                    const nodes = window.app.graph._nodes;
                    return {loaded: nodes.length,
                            unknown: nodes.filter(n => !LiteGraph.registered_node_types[n.type]).map(n => n.type),
                            title_height: LiteGraph.NODE_TITLE_HEIGHT,
                            geometry: nodes.map(n => ({id: n.id, type: n.type, pos: [n.pos[0], n.pos[1]],
                                                       size: [n.size[0], n.size[1]],
                                                       computed: Array.from(n.computeSize())}))};
                }""",
                workflow,
            )
            print(json.dumps({"name": Path(file).stem, "nodes": len(workflow["nodes"]), **result}), flush=True)
        browser.close()


if __name__ == "__main__":
    main()
