// FashionChameleon live widget: the frame view, garment picker + Switch, prompt box and Stop on ChameleonLiveStream.
// Frames come from ComfyUI's binary previews with metadata (b_preview_with_metadata) for this node; commands go to
// the pack's routes (POST /chameleon/live/{session}/switch | /stop). Only the documented extension API is used.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE = "ChameleonLiveStream";
const FPS = 24;

function el(tag, props = {}, children = []) {
  const e = Object.assign(document.createElement(tag), props);
  for (const c of children) e.append(c);
  return e;
}

async function post(path, body) {
  const r = await api.fetchApi(path, { method: "POST", headers: { "Content-Type": "application/json" },
                                       body: JSON.stringify(body ?? {}) });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.error || `HTTP ${r.status}`);
  return data;
}

async function uploadedImages() {
  const r = await api.fetchApi("/object_info/LoadImage");
  const info = await r.json();
  return info?.LoadImage?.input?.required?.image?.[0] ?? [];
}

async function upload(file) {
  const form = new FormData();
  form.append("image", file);
  const r = await api.fetchApi("/upload/image", { method: "POST", body: form });
  if (!r.ok) throw new Error(`upload failed: HTTP ${r.status}`);
  const data = await r.json();
  return data.subfolder ? `${data.subfolder}/${data.name}` : data.name;
}

function buildWidget(node) {
  const view = el("img", { className: "chameleon-live-frame" });
  Object.assign(view.style, { width: "100%", maxHeight: "320px", objectFit: "contain", background: "#111" });
  const readout = el("div", { textContent: "idle" });
  readout.style.font = "11px monospace";
  const picker = el("select");
  const refresh = el("button", { textContent: "↻", title: "reload the uploaded images" });
  const file = el("input", { type: "file", accept: "image/*" });
  const switchBtn = el("button", { textContent: "Switch garment" });
  const promptBox = el("input", { type: "text", placeholder: "new prompt (needs the clip input)" });
  const promptBtn = el("button", { textContent: "Switch prompt" });
  const stopBtn = el("button", { textContent: "Stop" });
  const message = el("div");
  message.style.font = "11px sans-serif";
  const root = el("div", { className: "chameleon-live" }, [
    view, readout,
    el("div", {}, [picker, refresh, file, switchBtn]),
    el("div", {}, [promptBox, promptBtn, stopBtn]),
    message,
  ]);

  const live = { session: null, frames: [], shown: 0, timer: null, chunk: 0, fps: 0 };
  node.chameleonLive = live;
  const say = (text, bad = false) => { message.textContent = text; message.style.color = bad ? "#f66" : "#9c9"; };

  async function fillPicker(select) {
    try {
      const names = await uploadedImages();
      picker.replaceChildren(...names.map((n) => el("option", { value: n, textContent: n })));
      if (select) picker.value = select;
    } catch (e) { say(String(e), true); }
  }
  fillPicker();
  refresh.onclick = () => fillPicker();
  file.onchange = async () => {
    if (!file.files?.length) return;
    try { const name = await upload(file.files[0]); await fillPicker(name); say(`uploaded ${name}`); }
    catch (e) { say(String(e), true); }
  };
  root.addEventListener("dragover", (e) => e.preventDefault());
  root.addEventListener("drop", async (e) => {
    e.preventDefault();
    e.stopPropagation();
    const f = e.dataTransfer?.files?.[0];
    if (!f) return;
    try { const name = await upload(f); await fillPicker(name); say(`uploaded ${name}`); }
    catch (err) { say(String(err), true); }
  });
  const command = async (path, body, done) => {
    if (!live.session) { say("no live session running: queue the workflow", true); return; }
    try { await post(`/chameleon/live/${encodeURIComponent(live.session)}/${path}`, body); say(done); }
    catch (e) { say(String(e.message ?? e), true); }
  };
  switchBtn.onclick = () => command("switch", { garment: picker.value }, `garment ${picker.value} queued`);
  promptBtn.onclick = () => command("switch", { prompt: promptBox.value }, "prompt queued");
  stopBtn.onclick = () => command("stop", {}, "stop queued");

  // Play the received frames at the video's frame rate; latest wins when the view falls behind.
  live.timer = setInterval(() => {
    if (!live.frames.length) return;
    while (live.frames.length > FPS) URL.revokeObjectURL(live.frames.shift());  // behind by a second: skip ahead
    const url = live.frames.shift();
    if (view.src) URL.revokeObjectURL(view.src);
    view.src = url;
    live.shown += 1;
    const s = live.session ? `session ${live.session}` : "idle";
    readout.textContent = `${s} · chunk ${live.chunk} · generating ${live.fps.toFixed(1)} fps · shown ${live.shown}`;
  }, 1000 / FPS);
  live.onFrame = (blob) => {
    live.frames.push(URL.createObjectURL(blob));
    while (live.frames.length > 2 * FPS) URL.revokeObjectURL(live.frames.shift());
  };
  live.poll = async () => {
    if (!live.session) return;
    try {
      const r = await api.fetchApi(`/chameleon/live/${encodeURIComponent(live.session)}`);
      if (!r.ok) return;
      const s = await r.json();
      live.chunk = s.chunk; live.fps = s.fps;
      if (s.status !== "running") { say(`session ${s.status} after ${s.frames} frames`); live.session = null; }
    } catch (_) { /* the server restarts: try again on the next tick */ }
  };
  live.pollTimer = setInterval(live.poll, 500);
  return root;
}

app.registerExtension({
  name: "FashionChameleon.LiveStream",
  setup() {
    api.addEventListener("b_preview_with_metadata", ({ detail }) => {
      const id = String(detail?.displayNodeId ?? detail?.nodeId ?? "");
      const node = app.graph?.getNodeById?.(id);
      if (node?.chameleonLive && detail.blob) node.chameleonLive.onFrame(detail.blob);
    });
    api.addEventListener("chameleon.live.started", ({ detail }) => {
      const node = app.graph?.getNodeById?.(detail?.node);
      if (node?.chameleonLive) { node.chameleonLive.session = detail.session; node.chameleonLive.shown = 0; }
    });
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE) return;
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = created?.apply(this, arguments);
      this.addDOMWidget("chameleon_live", "chameleon_live", buildWidget(this), { serialize: false });
      this.setSize?.([Math.max(this.size[0], 360), Math.max(this.size[1], 560)]);
      return r;
    };
    const removed = nodeType.prototype.onRemoved;
    nodeType.prototype.onRemoved = function () {
      clearInterval(this.chameleonLive?.timer);
      clearInterval(this.chameleonLive?.pollTimer);
      return removed?.apply(this, arguments);
    };
  },
});
