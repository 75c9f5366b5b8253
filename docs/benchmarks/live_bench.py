"""Live mode throughput on a real CPU ComfyUI at tiny size: frames received per second (the live node's own
``chameleon.live.frame`` messages, as the widget gets them) against frames generated per second, and the switch
latency (garment command posted -> first frame received of the chunk the switch applies to).

    COMFYUI_DIR=/work/comfyui /work/comfyui/.venv/bin/python docs/benchmarks/live_bench.py [--frames 241]

Uses the integration test's helpers (tiny random checkpoints, the launcher, the preview client); writes JSON to
stdout. The numbers are for the pipeline's overhead (frame channel, routes, the command queue), not for model speed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests import test_comfyui_integration as it  # noqa: E402


def start(base: Path):
    python = it._comfy_python()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([python, "-m", "chameleon_core.tools.tiny_checkpoints", "--models", str(base / "models"),
                    "--input", str(base / "input")], cwd=REPO, env=env, check=True, capture_output=True)
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "comfyui-fashionchameleon").symlink_to(REPO, target_is_directory=True)
    port = it._free_port()
    env = {**os.environ, "CHAMELEON_TINY_SIZES": str(base / "models" / "tiny_sizes.json")}
    env.pop("PYTHONPATH", None)
    log = open(base / "comfyui.log", "w")
    proc = subprocess.Popen([python, str(REPO / "tests" / "comfyui_launcher.py"), "--cpu", "--listen", "127.0.0.1",
                             "--port", str(port), "--base-directory", str(base), "--database-url",
                             "sqlite:///:memory:", "--preview-method", "latent2rgb", "--disable-auto-launch"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    srv = it.Server(f"http://127.0.0.1:{port}", base, base / "comfyui.log")
    deadline = time.time() + 300
    while True:
        try:
            srv.get("/system_stats")
            return srv, proc
        except (urllib.error.URLError, ConnectionError, OSError):
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("ComfyUI did not start") from None
            time.sleep(1)


def run(srv, frames: int, switch_at: int) -> dict:
    client = it._Previews(srv)
    arrivals: list[tuple[float, dict]] = []
    try:
        queued = srv.post("/prompt", {"prompt": it._live_prompt(frames), "client_id": client.client_id})
        pid = queued["prompt_id"]
        sid = it._live_session(srv, pid)["session"]
        t_start = time.perf_counter()
        seen, posted, landed_chunk = 0, None, None
        status = {}

        def collect() -> None:
            nonlocal seen
            now = time.perf_counter()
            while seen < len(client.events):
                event = client.events[seen]
                if event["type"] == "chameleon.live.frame" and event["data"]["session"] == sid:
                    arrivals.append((now, event["data"]))
                seen += 1

        while True:
            collect()
            status = srv.get(f"/chameleon/live/{sid}")
            if posted is None and status["chunk"] >= switch_at and status["status"] == "running":
                srv.post(f"/chameleon/live/{sid}/switch", {"garment": "garment2.png"})
                posted = time.perf_counter()
            if posted and landed_chunk is None and status["timeline"]:
                landed_chunk = status["timeline"][0]["chunk"]
            if status["status"] != "running":
                break
            time.sleep(0.02)
        t_end = time.perf_counter()
        time.sleep(1.0)
        collect()
        # a frame of chunk index c carries chunk = c + 1 (chunks made); the switch applies before chunk `landed_chunk`
        first_after = next((t for t, f in arrivals if landed_chunk is not None and f["chunk"] > landed_chunk), None)
        return {
            "frames_generated": status["frames"], "chunks": status["chunk"], "status": status["status"],
            "generation_fps": status["fps"], "wall_seconds": round(t_end - t_start, 3),
            "frames_received": len(arrivals), "received_in_order": [f["index"] for _, f in arrivals] ==
            list(range(len(arrivals))), "received_fps": round(len(arrivals) / (t_end - t_start), 3),
            "frame_bytes_mean": round(sum(len(f["image"]) for _, f in arrivals) / max(1, len(arrivals))),
            "switch_posted_at_chunk": switch_at, "switch_applied_at_chunk": landed_chunk,
            "switch_latency_s": round(first_after - posted, 3) if first_after and posted else None,
        }
    finally:
        client.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=241, help="the live node's frame limit")
    p.add_argument("--switch-at", type=int, default=10, help="post the garment switch once this many chunks exist")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        srv, proc = start(Path(tmp))
        try:
            run(srv, 21, 1)  # warm-up: model loads, first-call costs
            print(json.dumps(run(srv, args.frames, args.switch_at), indent=1))
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
