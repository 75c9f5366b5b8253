// FashionChameleon live widget: the frame view, garment picker + Switch, prompt box and Stop on ChameleonLiveStream.
// Frames come on the pack's own websocket message, chameleon.live.frame (JPEG data URLs, sent by the node at 24 fps
// whatever ComfyUI's --preview-method says; the node sends no ComfyUI previews, so nothing is drawn behind these
// controls). Commands go to the pack's routes (POST /chameleon/live/{session}/switch | /stop). When a session runs
// but no frame arrives, the widget says why it may be. Only the documented extension API is used.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE = "ChameleonLiveStream";
const NO_FRAMES_AFTER_MS = 4000;  // a running session with frames made but none received this long: say so
const NO_SESSION_AFTER_MS = 8000;  // the node runs but no session was announced to this page this long: say so

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
  const view = el("img", { className: "chameleon-live-frame", alt: "" });
  Object.assign(view.style, { width: "100%", height: "240px", objectFit: "contain", background: "#111",
                              display: "block" });
  const readout = el("div", { className: "chameleon-live-readout", textContent: "idle: press Run" });
  readout.style.font = "11px monospace";
  const picker = el("select", { title: "garment to switch to (images in ComfyUI's input folder)" });
  picker.style.maxWidth = "170px";
  const refresh = el("button", { textContent: "↻", title: "reload the list of input images" });
  const file = el("input", { type: "file", accept: "image/*", title: "upload a garment image" });
  file.style.maxWidth = "150px";
  const switchBtn = el("button", { textContent: "Switch garment" });
  const promptBox = el("input", { type: "text", placeholder: "new prompt (needs the clip input)" });
  const promptBtn = el("button", { textContent: "Switch prompt" });
  const stopBtn = el("button", { textContent: "Stop" });
  const message = el("div", { className: "chameleon-live-message" });
  Object.assign(message.style, { font: "11px sans-serif", whiteSpace: "normal", overflowWrap: "anywhere" });
  const root = el("div", { className: "chameleon-live" }, [
    view, readout,
    el("div", {}, [picker, refresh, file, switchBtn]),
    el("div", {}, [promptBox, promptBtn, stopBtn]),
    message,
  ]);
  Object.assign(root.style, { display: "flex", flexDirection: "column", gap: "4px" });

  const live = { session: null, last: null, received: 0, frameChunk: 0, chunk: 0, fps: 0, frames: 0, startedAt: 0,
                 executingSince: 0, problem: "" };
  node.chameleonLive = live;
  const say = (text, bad = false) => { message.textContent = text; message.style.color = bad ? "#f66" : "#9c9"; };
  const show = () => {
    const s = live.session ? `session ${live.session}` : "idle";
    readout.textContent = `${s} · chunk ${live.chunk} · generating ${live.fps.toFixed(1)} fps · shown ${live.received}`;
  };

  async function fillPicker(select) {
    try {
      const names = await uploadedImages();
      const keep = select ?? picker.value;
      picker.replaceChildren(...names.map((n) => el("option", { value: n, textContent: n })));
      if (keep && names.includes(keep)) picker.value = keep;
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
    if (!live.session) { say("no live session running: press Run first", true); return; }
    try { await post(`/chameleon/live/${encodeURIComponent(live.session)}/${path}`, body); say(done); }
    catch (e) { say(String(e.message ?? e), true); }
  };
  switchBtn.onclick = () => command("switch", { garment: picker.value },
                                    `garment ${picker.value} queued: it lands at the next chunk`);
  promptBtn.onclick = () => command("switch", { prompt: promptBox.value }, "prompt queued");
  stopBtn.onclick = () => command("stop", {}, "stop queued");

  live.start = (session) => {
    Object.assign(live, { session, received: 0, frameChunk: 0, chunk: 0, fps: 0, frames: 0, startedAt: Date.now(),
                          problem: "" });
    say("session started: waiting for the first frame");
    show();
  };
  live.onFrame = (frame) => {
    if (frame.session !== live.session) {
      if (live.session) return;  // a frame of an earlier session, still in flight
      if (frame.session !== live.last) live.start(frame.session);  // the started message was missed
    }
    view.src = frame.image;
    live.received += 1;
    live.frameChunk = frame.chunk;
    live.chunk = Math.max(live.chunk, frame.chunk);
    if (live.received === 1 || live.problem) {
      live.problem = "";
      say("streaming: pick a garment and press Switch garment; it lands at the next chunk");
    }
    show();
  };
  const problem = (text) => { if (live.problem !== text) { live.problem = text; say(text, true); } };
  live.poll = async () => {
    const now = Date.now();
    if (!live.session) {
      if (live.executingSince && now - live.executingSince > NO_SESSION_AFTER_MS) {
        problem("the live node is running but this page was not told its session: it was queued by another "
                + "client or browser tab (frames go to the one that queued it). Reload this page (F5) if the "
                + "pack was updated, then press Run here.");
      }
      return;
    }
    try {
      const r = await api.fetchApi(`/chameleon/live/${encodeURIComponent(live.session)}`);
      if (!r.ok) return;
      const s = await r.json();
      live.chunk = s.chunk; live.fps = s.fps; live.frames = s.frames;
      show();
      if (s.status !== "running") {
        const none = live.received === 0 && s.frames > 0 ? "; none of its frames reached this page" : "";
        say(`session ${s.status} after ${s.frames} frames${none}${s.error ? `: ${s.error}` : ""}`,
            s.status === "failed" || !!none);
        live.last = live.session;  // its last frames may still arrive: shown, without restarting it
        live.session = null;
        return;
      }
      if (live.received === 0 && s.frames > 0 && now - live.startedAt > NO_FRAMES_AFTER_MS) {
        problem(`no frames reached this page although the session has made ${s.frames}: frames go only to the `
                + "browser tab that queued the workflow. If that is this tab, reload the page (F5): the browser "
                + "may run an older copy of this widget.");
      }
    } catch (_) { /* the server restarts: try again on the next tick */ }
  };
  live.pollTimer = setInterval(live.poll, 500);
  return root;
}

app.registerExtension({
  name: "FashionChameleon.LiveStream",
  setup() {
    const liveNode = (id) => {
      const node = app.graph?.getNodeById?.(id);
      return node?.chameleonLive ? node : null;
    };
    api.addEventListener("chameleon.live.frame", ({ detail }) => {
      liveNode(detail?.node)?.chameleonLive.onFrame(detail);
    });
    api.addEventListener("chameleon.live.started", ({ detail }) => {
      liveNode(detail?.node)?.chameleonLive.start(detail.session);
    });
    api.addEventListener("executing", ({ detail }) => {  // detail: the running node's id, or null when idle
      for (const node of app.graph?._nodes ?? []) {
        if (!node.chameleonLive) continue;
        const running = detail != null && String(detail) === String(node.id);
        node.chameleonLive.executingSince = running ? (node.chameleonLive.executingSince || Date.now()) : 0;
      }
    });
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE) return;
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = created?.apply(this, arguments);
      this.addDOMWidget("chameleon_live", "chameleon_live", buildWidget(this), {
        serialize: false,
        getMinHeight: () => 400,
      });
      this.setSize?.([Math.max(this.size[0], 420), Math.max(this.size[1], 620)]);
      return r;
    };
    const removed = nodeType.prototype.onRemoved;
    nodeType.prototype.onRemoved = function () {
      clearInterval(this.chameleonLive?.pollTimer);
      return removed?.apply(this, arguments);
    };
  },
});
