// pixelcnn serve: the page. Plain JS, no build step.
// The image being edited is `state.image` (C*H*W levels, channel-major) and `state.known`
// (H*W, 0 = erased); canvases are drawn at the model's resolution and scaled up by CSS.
"use strict";

const $ = (id) => document.getElementById(id);
const ERASED = [224, 48, 154];                       // how an erased pixel is shown (pink)
const state = { models: [], m: null, image: null, known: null, sample: null, abort: null };
window.pixelcnn = state;                             // for debugging and the browser test

// ----- talking to the server -----------------------------------------------------------------

async function api(path, body) {
  const res = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" },
                                  body: JSON.stringify({ model: state.m.name, ...body }) });
  const data = await res.json();
  if (!res.ok) throw new Error(data.error || res.statusText);
  return data;
}

function jobSettings() {
  const settings = { temperature: Number($("temperature").value) };
  if (state.m.num_classes !== null) settings.label = Number($("label").value);
  return settings;
}

function say(text, isError = false) {
  $("message").textContent = text;
  $("message").className = isError ? "error" : "";
}

async function busy(button, work) {
  button.disabled = true;
  try { await work(); } catch (e) { say(e.message, true); } finally { button.disabled = false; }
}

// ----- drawing images ------------------------------------------------------------------------

function toByte(v) { return Math.round(v * 255 / (state.m.levels - 1)); }

function rgbAt(image, i) {
  const { channels: c, height: h, width: w } = state.m;
  if (c === 1) { const v = toByte(image[i]); return [v, v, v]; }
  return [0, 1, 2].map((k) => toByte(image[k * h * w + i]));
}

function sizeCanvas(canvas) {
  canvas.width = state.m.width;
  canvas.height = state.m.height;
}

function paint(canvas, image, known = null) {
  sizeCanvas(canvas);
  const ctx = canvas.getContext("2d");
  const out = ctx.createImageData(canvas.width, canvas.height);
  for (let i = 0; i < canvas.width * canvas.height; i++) {
    const rgb = known && !known[i] ? ERASED : rgbAt(image, i);
    out.data.set([...rgb, 255], 4 * i);
  }
  ctx.putImageData(out, 0, 0);
}

function redraw() { paint($("canvas"), state.image, state.known); }

function pixelAt(canvas, event) {
  const r = canvas.getBoundingClientRect();
  return [Math.floor((event.clientX - r.left) / r.width * state.m.width),
          Math.floor((event.clientY - r.top) / r.height * state.m.height)];
}

function inkValues() {
  const L = state.m.levels;
  if (state.m.channels === 1) return [Number($("value").value)];
  const hex = $("colour").value;
  return [1, 3, 5].map((k) => Math.round(parseInt(hex.slice(k, k + 2), 16) * (L - 1) / 255));
}

function stamp(x, y) {
  const { channels: c, height: h, width: w } = state.m;
  const size = Number($("brush").value), erase = document.querySelector("[name=tool]:checked").value === "erase";
  const ink = inkValues(), lo = -Math.floor((size - 1) / 2);
  for (let dy = lo; dy < lo + size; dy++) for (let dx = lo; dx < lo + size; dx++) {
    const px = x + dx, py = y + dy;
    if (px < 0 || py < 0 || px >= w || py >= h) continue;
    const i = py * w + px;
    if (erase) { state.known[i] = 0; continue; }
    state.known[i] = 1;
    for (let k = 0; k < c; k++) state.image[k * h * w + i] = ink[k];
  }
}

function strokeTo(from, to) {                        // every pixel on the segment, so fast strokes stay joined
  const steps = Math.max(Math.abs(to[0] - from[0]), Math.abs(to[1] - from[1]), 1);
  for (let s = 0; s <= steps; s++)
    stamp(Math.round(from[0] + (to[0] - from[0]) * s / steps), Math.round(from[1] + (to[1] - from[1]) * s / steps));
  redraw();
}

function setUpDrawing() {
  const canvas = $("canvas");
  let last = null;
  canvas.addEventListener("pointerdown", (e) => {
    if (document.querySelector("[name=tool]:checked").value === "inspect") {
      const [x, y] = pixelAt(canvas, e);
      dependsOn(y, x).catch((err) => say(err.message, true));
      return;
    }
    canvas.setPointerCapture(e.pointerId);
    last = pixelAt(canvas, e);
    strokeTo(last, last);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (last === null) return;
    const p = pixelAt(canvas, e);
    strokeTo(last, p);
    last = p;
  });
  const end = () => { last = null; };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
}

// ----- models ----------------------------------------------------------------------------------

function chooseModel(name) {
  const m = state.models.find((x) => x.name === name);
  state.m = m;
  state.image = new Array(m.channels * m.height * m.width).fill(0);
  state.known = new Array(m.height * m.width).fill(1);
  $("model-info").textContent = `${m.family}, ${m.channels}x${m.height}x${m.width}, ${m.levels} levels, ` +
    `${m.parameters.toLocaleString()} parameters` + (m.num_classes ? `, ${m.num_classes} classes` : "");
  $("note").textContent = m.completion_note;
  $("value").max = m.levels - 1;
  $("value").value = m.levels - 1;
  $("value-label").hidden = m.channels !== 1;
  $("colour-label").hidden = m.channels === 1;
  $("label-label").hidden = m.num_classes === null;
  $("label").innerHTML = "";
  for (let k = 0; k < (m.num_classes || 0); k++) $("label").add(new Option(String(k), String(k)));
  for (const id of ["sample-canvas", "heat"]) sizeCanvas($(id));
  $("completions").innerHTML = "";
  $("completions").dataset.count = "0";
  redraw();
}

async function loadModels() {
  const res = await fetch("/api/models");
  state.models = (await res.json()).models;
  for (const m of state.models) $("model").add(new Option(m.name, m.name));
  $("model").addEventListener("change", () => chooseModel($("model").value));
  chooseModel(state.models[0].name);
}

// ----- actions ---------------------------------------------------------------------------------

async function downloadPng(image, name) {
  const res = await fetch("/api/png", { method: "POST", headers: { "Content-Type": "application/json" },
                                        body: JSON.stringify({ model: state.m.name, image }) });
  if (!res.ok) throw new Error((await res.json()).error);
  const a = document.createElement("a");
  a.href = URL.createObjectURL(await res.blob());
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

function useAsInput(image) {
  state.image = image.slice();
  state.known.fill(1);
  redraw();
}

function smallButton(text, action) {
  const b = document.createElement("button");
  b.textContent = text;
  b.addEventListener("click", () => busy(b, action));
  return b;
}

async function complete() {
  const erased = state.known.filter((k) => !k).length;
  if (erased === 0) { say("erase some pixels first: Complete fills in the erased (pink) ones", true); return; }
  const n = Number($("n").value);
  say(`completing ${erased} erased pixels ${n} ways...`);
  const data = await api("/api/complete", { image: state.image, known: state.known, n, ...jobSettings() });
  const grid = $("completions");
  grid.innerHTML = "";
  data.completions.forEach((image, k) => {
    const fig = document.createElement("figure"), canvas = document.createElement("canvas");
    canvas.className = "pixels completion";
    paint(canvas, image);
    fig.append(canvas, smallButton("use", async () => useAsInput(image)),
               smallButton("PNG", () => downloadPng(image, `completion-${k}.png`)));
    grid.append(fig);
  });
  grid.dataset.count = String(data.completions.length);
  say(`${data.completions.length} completions (seed ${data.seed})`);
}

function drawSamplePixel(canvas, msg) {
  const ctx = canvas.getContext("2d");
  const { channels: c } = state.m;
  const rgb = c === 1 ? Array(3).fill(toByte(msg.v[0])) : msg.v.map(toByte);
  ctx.fillStyle = `rgb(${rgb.join(",")})`;
  ctx.fillRect(msg.w, msg.h, 1, 1);
}

async function readLines(res, onLine) {
  const reader = res.body.getReader(), decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      onLine(JSON.parse(buffer.slice(0, nl)));
      buffer = buffer.slice(nl + 1);
    }
  }
}

async function sample() {
  const canvas = $("sample-canvas"), total = state.m.height * state.m.width;
  sizeCanvas(canvas);                                 // clears it
  canvas.dataset.pixels = "0";
  canvas.dataset.done = "false";
  state.sample = null;
  state.abort = new AbortController();
  $("stop").disabled = false;
  for (const id of ["sample-use", "sample-download"]) $(id).disabled = true;
  try {
    const res = await fetch("/api/sample", { method: "POST", headers: { "Content-Type": "application/json" },
                                             body: JSON.stringify({ model: state.m.name, ...jobSettings() }),
                                             signal: state.abort.signal });
    if (!res.ok) throw new Error((await res.json()).error);
    let count = 0;
    await readLines(res, (msg) => {
      if (msg.event === "error") throw new Error(msg.error);
      if (msg.event === "done") { state.sample = msg.image; return; }
      if (msg.event === "start") { $("sample-progress").textContent = `seed ${msg.seed}`; return; }
      drawSamplePixel(canvas, msg);
      canvas.dataset.pixels = String(++count);
      $("sample-progress").textContent = `pixel ${count} of ${total}`;
    });
    canvas.dataset.done = String(state.sample !== null);
  } catch (e) {
    if (e.name === "AbortError") $("sample-progress").textContent += " (stopped)";
    else throw e;
  } finally {
    $("stop").disabled = true;
    for (const id of ["sample-use", "sample-download"]) $(id).disabled = state.sample === null;
  }
}

function heatColour(t) {                             // magma-like: black, purple, red, orange, pale yellow
  const stops = [[0, 0, 4], [81, 18, 124], [183, 55, 121], [252, 137, 97], [252, 253, 191]];
  const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1), i = Math.min(Math.floor(x), stops.length - 2);
  return stops[i].map((a, k) => Math.round(a + (stops[i + 1][k] - a) * (x - i)));
}

async function dependsOn(h, w) {
  const d = await api("/api/receptive_field", { image: state.image, pixel: [h, w], ...jobSettings() });
  const canvas = $("depends"), ctx = (sizeCanvas(canvas), canvas.getContext("2d"));
  const out = ctx.createImageData(canvas.width, canvas.height), high = Math.max(...d.grad, 1e-30);
  d.grad.forEach((g, i) => {
    let rgb = [24, 24, 30];                                          // later pixels
    if (i === h * state.m.width + w) rgb = [220, 40, 40];
    else if (d.seen[i]) { const v = Math.round(80 + 175 * Math.sqrt(g / high)); rgb = [v, v, v]; }
    else if (d.past[i]) rgb = [255, 170, 40];                        // earlier, without effect
    out.data.set([...rgb, 255], 4 * i);
  });
  ctx.putImageData(out, 0, 0);
  canvas.dataset.pixel = `${h},${w}`;
  const n = d.counts;
  $("depends-note").textContent = `pixel (${h}, ${w}) depends on ${n.seen} of the ${n.past} sub-pixels before it; ` +
    `${n.unseen_pixels} earlier pixels without effect`;
}

async function likelihood() {
  const data = await api("/api/likelihood", { image: state.image, ...jobSettings() });
  const canvas = $("heat"), ctx = (sizeCanvas(canvas), canvas.getContext("2d"));
  const high = Math.max(...data.bits, 1e-9), out = ctx.createImageData(canvas.width, canvas.height);
  data.bits.forEach((b, i) => out.data.set([...heatColour(b / high), 255], 4 * i));
  ctx.putImageData(out, 0, 0);
  $("bpd").textContent = `${data.bits_per_dim.toFixed(4)} bits/dim (${data.nll_nats.toFixed(1)} nats)`;
  $("legend-high").textContent = high.toFixed(1);
  $("legend").hidden = false;
}

async function compress() {
  $("compress-result").textContent = "compressing...";
  const d = await api("/api/compress", { image: state.image, ...jobSettings() });
  $("compress-result").textContent = `this model's codec: ${d.model_bytes} bytes (ideal ${d.ideal_bytes.toFixed(1)} ` +
    `plus the file's header and padding) · PNG: ${d.png_bytes} bytes · raw: ${d.raw_bytes} bytes`;
}

async function upload(file) {
  const res = await fetch(`/api/upload?model=${encodeURIComponent(state.m.name)}`, { method: "POST", body: file });
  const data = await res.json();
  if (!res.ok) throw new Error(data.error);
  useAsInput(data.image);
  say(`uploaded ${file.name}: ${data.note}`);
}

function setUpButtons() {
  const on = (id, action) => $(id).addEventListener("click", () => busy($(id), action));
  on("complete", complete);
  on("sample", sample);
  on("likelihood", likelihood);
  on("compress", compress);
  on("download", () => downloadPng(state.image, "image.png"));
  on("sample-download", () => downloadPng(state.sample, "sample.png"));
  on("sample-use", async () => useAsInput(state.sample));
  $("stop").addEventListener("click", () => state.abort && state.abort.abort());
  $("clear").addEventListener("click", () => { state.image.fill(0); state.known.fill(1); redraw(); });
  $("erase-all").addEventListener("click", () => { state.known.fill(0); redraw(); });
  $("upload").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) upload(file).catch((err) => say(err.message, true));
    e.target.value = "";
  });
}

setUpDrawing();
setUpButtons();
loadModels().catch((e) => say(`could not load the models: ${e.message}`, true));
