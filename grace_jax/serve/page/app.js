"use strict";
// The page: upload, poll the job, then show the video with face boxes, one timeline per face, the
// heat maps and the downloads. Everything shown comes from the job's JSON; no HTML is built from
// strings the server or the user supplied (textContent only), so a file name cannot inject markup.

const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

let info = { class_names: [], demos: [], max_upload_mb: 200, max_seconds: 120 };
let current = null; // {id, result, strip} of the job on show
let generation = 0; // a newer upload stops the older one's polling

function showMessage(text, kind) {
  const box = $("message");
  box.textContent = text;
  box.className = kind || "";
  box.hidden = !text;
}

function showProgress(text, fraction) {
  $("progress").hidden = text === null;
  $("progress-text").textContent = text || "";
  if (fraction === null || fraction === undefined) $("progress-bar").removeAttribute("value");
  else $("progress-bar").value = fraction;
}

function classColor(name) {
  const k = info.class_names.indexOf(name);
  return COLORS[(k < 0 ? 0 : k) % COLORS.length];
}

async function loadInfo() {
  const response = await fetch("/api/info");
  info = await response.json();
  $("limits").textContent = `Up to ${info.max_upload_mb} MB and ${info.max_seconds} s. Classes: ${info.class_names.join(", ")}.`;
  const list = $("demo-list");
  list.replaceChildren();
  for (const name of info.demos) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "demo";
    button.textContent = name;
    button.addEventListener("click", () => submit(`/api/demo?name=${encodeURIComponent(name)}&wait=0&view=1`, null, name));
    list.appendChild(button);
  }
  $("demos").hidden = info.demos.length === 0;
}

function uploadFile(file) {
  if (!file) return;
  // The server refuses these too (from Content-Length, before reading the body); checking here first
  // spares the upload, and a browser whose upload is cut off mid-way sees no response at all.
  if (file.size === 0) return showMessage(`${file.name}: the upload is empty: choose a video file`);
  if (file.size > info.max_upload_mb * 1e6) {
    return showMessage(`${file.name}: the upload is ${(file.size / 1e6).toFixed(1)} MB; this server takes videos up to ${info.max_upload_mb} MB`);
  }
  submit(`/api/predict?name=${encodeURIComponent(file.name)}&wait=0&view=1`, file, file.name);
}

async function submit(url, body, name) {
  const mine = ++generation;
  $("result").hidden = true;
  showMessage("");
  showProgress(`Uploading ${name}…`, null);
  let response;
  try {
    response = await fetch(url, { method: "POST", body: body, headers: body ? { "Content-Type": "application/octet-stream" } : {} });
  } catch (error) {
    showProgress(null);
    return showMessage(`${name}: the upload failed (${error.message}); is the server still running?`);
  }
  const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) {
    showProgress(null);
    const prefix = response.status === 503 ? "Server busy: " : "";
    return showMessage(prefix + (data.error || `HTTP ${response.status}`));
  }
  poll(data.id, mine);
}

async function poll(id, mine) {
  while (mine === generation) {
    const response = await fetch(`/api/jobs/${id}`);
    const job = await response.json();
    if (mine !== generation) return;
    if (!response.ok) {
      showProgress(null);
      return showMessage(job.error || `HTTP ${response.status}`);
    }
    if (job.state === "queued") showProgress(`${job.name}: waiting, position ${job.position} in the queue`, 0);
    else if (job.state === "running") showProgress(`${job.name}: ${job.stage} (${Math.round(job.fraction * 100)}%)`, job.fraction);
    else if (job.state === "failed") {
      showProgress(null);
      return showMessage(job.error);
    } else if (job.state === "done") {
      showProgress(null);
      return showResult(job);
    }
    await new Promise((resolve) => setTimeout(resolve, 400));
  }
}

async function showResult(job) {
  const result = job.result;
  current = { id: job.id, result: result, strip: job.strip, links: job.links };
  $("result-title").textContent = `${result.input}: ${result.prediction || "no face found"}`;
  $("notes").textContent = (result.notes || []).join(" ");
  $("notes").hidden = !(result.notes || []).length;
  $("download-json").href = job.links.json;
  $("download-csv").href = job.links.csv;
  $("download-timeline").href = job.links.timeline || "#";
  $("timeline-link").hidden = !job.links.timeline;
  buildFaces(job);
  $("result").hidden = false;
  const video = $("video");
  video.removeAttribute("src");
  $("strip-box").hidden = true;
  $("stage").hidden = false;
  if (job.links.video) {
    try {
      // The whole video into the page, then the server deletes its copy: nothing of the upload stays on
      // the server once the result is on show.
      const blob = await (await fetch(job.links.video)).blob();
      video.src = URL.createObjectURL(blob);
    } catch (error) {
      showStrip();
    }
    fetch(`/api/jobs/${job.id}/release`, { method: "POST" });
  } else showStrip();
}

function showStrip() {
  $("stage").hidden = true;
  if (!current || !current.strip) return;
  const image = new Image();
  image.onload = () => {
    const canvas = $("strip");
    canvas.width = image.width;
    canvas.height = image.height;
    const g = canvas.getContext("2d");
    g.drawImage(image, 0, 0);
    const strip = current.strip;
    const [h, w] = current.result.source_size;
    strip.frame_indices.forEach((frame, k) => {
      for (const [t, track] of current.result.tracks.entries()) {
        const box = boxAt(track, frame);
        if (box) drawBox(g, box, k * strip.width, 0, strip.width / w, strip.height / h, `Face ${t + 1}`, classColor(track.prediction));
      }
    });
    $("strip-box").hidden = false;
  };
  image.src = current.links.strip;
}

function trackBoxes(track) {
  // The face's boxes; without face crops (face_crop none) the squares the model saw, window by window.
  if (track.boxes && track.boxes.length) return track.boxes;
  const boxes = [];
  for (const w of track.windows || []) (w.frame_indices || []).forEach((f, k) => boxes.push([f, ...w.crop_boxes[k]]));
  return boxes.sort((a, b) => a[0] - b[0]);
}

function boxAt(track, frame) {
  // The box of the nearest frame with one, within the frames the face was seen in.
  const boxes = trackBoxes(track);
  if (!boxes.length) return null;
  const fps = (current && current.result.fps) || 25;
  const first = boxes[0][0], last = boxes[boxes.length - 1][0];
  if (frame < first - fps * 0.25 || frame > last + fps * 0.25) return null;
  let best = boxes[0];
  for (const box of boxes) if (Math.abs(box[0] - frame) < Math.abs(best[0] - frame)) best = box;
  return best;
}

function windowAt(track, seconds) {
  for (const w of track.windows || []) if (seconds >= w.start_seconds && seconds < w.end_seconds) return w;
  return null;
}

function drawBox(g, box, ox, oy, sx, sy, label, color) {
  const [, x0, y0, x1, y1] = box;
  g.strokeStyle = color;
  g.lineWidth = 2;
  g.strokeRect(ox + x0 * sx, oy + y0 * sy, (x1 - x0) * sx, (y1 - y0) * sy);
  g.font = "bold 13px system-ui, sans-serif";
  const width = g.measureText(label).width + 6;
  const top = Math.max(oy + y0 * sy - 17, oy);
  g.fillStyle = color;
  g.fillRect(ox + x0 * sx, top, width, 17);
  g.fillStyle = "#fff";
  g.fillText(label, ox + x0 * sx + 3, top + 13);
}

function drawOverlay() {
  const video = $("video"), canvas = $("overlay");
  if (!current || !video.videoWidth) return;
  canvas.width = video.clientWidth;
  canvas.height = video.clientHeight;
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  const [h, w] = current.result.source_size;
  // The element letterboxes the picture: boxes go where the frame is drawn, not over the black bars.
  const scale = Math.min(canvas.width / w, canvas.height / h);
  const ox = (canvas.width - w * scale) / 2, oy = (canvas.height - h * scale) / 2;
  const seconds = video.currentTime;
  const frame = Math.floor(seconds * (current.result.fps || 25) + 1e-6);
  current.result.tracks.forEach((track, t) => {
    const box = boxAt(track, frame);
    if (!box) return;
    const window = windowAt(track, seconds);
    const name = (window && window.prediction) || track.prediction;
    const probs = (window && window.probabilities) || track.probabilities;
    const label = name ? `Face ${t + 1}: ${name}${probs ? " " + probs[name].toFixed(2) : ""}` : `Face ${t + 1}: no face`;
    drawBox(g, box, ox, oy, scale, scale, label, classColor(name));
  });
  document.querySelectorAll(".cursor").forEach((line) => {
    const x = line.timeToX(seconds);
    line.setAttribute("x1", x);
    line.setAttribute("x2", x);
  });
}

function svg(name, attributes, parent) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (parent) parent.appendChild(element);
  return element;
}

function timeline(track, duration) {
  // One line per class over the windows' middles; each window shaded in its top class's colour.
  const W = 600, H = 200, left = 34, right = 8, top = 8, bottom = 22;
  const chart = svg("svg", { class: "timeline", viewBox: `0 0 ${W} ${H}`, role: "img" });
  const windows = (track.windows || []).filter((w) => w.probabilities);
  const end = Math.max(duration || 0, ...windows.map((w) => w.end_seconds), 1e-3);
  const x = (s) => left + (s / end) * (W - left - right);
  const y = (p) => top + (1 - p) * (H - top - bottom);
  for (const w of windows) {
    svg("rect", { class: "top-shade", x: x(w.start_seconds), y: top, width: Math.max(x(w.end_seconds) - x(w.start_seconds), 1), height: H - top - bottom, fill: classColor(w.prediction), "fill-opacity": 0.15 }, chart);
  }
  svg("line", { x1: left, y1: y(0), x2: W - right, y2: y(0), stroke: "#999" }, chart);
  svg("line", { x1: left, y1: y(0), x2: left, y2: y(1), stroke: "#999" }, chart);
  for (const [text, px, py, anchor] of [["1", left - 4, y(1) + 4, "end"], ["0", left - 4, y(0) + 4, "end"], ["0 s", left, H - 6, "start"], [`${end.toFixed(1)} s`, W - right, H - 6, "end"]]) {
    svg("text", { x: px, y: py, "font-size": 11, "text-anchor": anchor, fill: "#555" }, chart).textContent = text;
  }
  for (const name of info.class_names) {
    const points = windows.map((w) => `${x((w.start_seconds + w.end_seconds) / 2).toFixed(1)},${y(w.probabilities[name] || 0).toFixed(1)}`);
    if (!points.length) continue;
    svg("polyline", { class: "line", "data-class": name, points: points.join(" "), fill: "none", stroke: classColor(name), "stroke-width": 2 }, chart);
    for (const point of points) {
      const [cx, cy] = point.split(",");
      svg("circle", { cx: cx, cy: cy, r: 2.5, fill: classColor(name) }, chart);
    }
  }
  const cursor = svg("line", { class: "cursor", x1: x(0), y1: top, x2: x(0), y2: y(0), stroke: "#000", "stroke-dasharray": "3 3" }, chart);
  cursor.timeToX = x;
  return chart;
}

function buildFaces(job) {
  const box = $("faces");
  box.replaceChildren();
  const result = job.result;
  if (!result.tracks.length) {
    const p = document.createElement("p");
    p.textContent = "No face was found in this video.";
    box.appendChild(p);
  }
  result.tracks.forEach((track, t) => {
    const face = document.createElement("div");
    face.className = "face";
    face.id = `face-${t + 1}`;
    const title = document.createElement("h3");
    const p = track.probabilities && track.prediction ? ` (${track.probabilities[track.prediction].toFixed(2)})` : "";
    title.textContent = `Face ${t + 1}: ${track.prediction || "not classified"}${p}, seen ${track.first_seconds.toFixed(1)}–${track.last_seconds.toFixed(1)} s`;
    title.className = "face-title";
    face.appendChild(title);
    if (track.note) {
      const note = document.createElement("p");
      note.className = "note";
      note.textContent = track.note;
      face.appendChild(note);
    }
    face.appendChild(timeline(track, result.duration_seconds));
    const legend = document.createElement("div");
    legend.className = "legend";
    for (const name of info.class_names) {
      const item = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = classColor(name);
      item.append(swatch, name);
      legend.appendChild(item);
    }
    face.appendChild(legend);
    const heatmap = job.links.heatmaps[String(t)];
    if (heatmap) {
      const caption = document.createElement("p");
      caption.className = "hint";
      const w = track.windows[job.heatmap_windows[String(t)]];
      caption.textContent = `Where the model looked for "${track.prediction}" (window ${w.start_seconds.toFixed(1)}–${w.end_seconds.toFixed(1)} s):`;
      const image = document.createElement("img");
      image.className = "heatmap";
      image.alt = `heat map of face ${t + 1}`;
      image.src = heatmap;
      face.append(caption, image);
    }
    box.appendChild(face);
  });
}

function setup() {
  const drop = $("drop"), file = $("file"), video = $("video");
  file.addEventListener("change", () => {
    uploadFile(file.files[0]);
    file.value = ""; // the same file chosen again is a new upload
  });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    uploadFile(e.dataTransfer.files[0]);
  });
  video.addEventListener("error", () => { if (video.getAttribute("src")) showStrip(); });
  for (const event of ["loadeddata", "seeked", "timeupdate", "pause"]) video.addEventListener(event, drawOverlay);
  window.addEventListener("resize", drawOverlay);
  const tick = () => {
    if (!video.paused) drawOverlay();
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  loadInfo().catch((error) => showMessage(`The server does not answer (${error.message}).`));
}

setup();
