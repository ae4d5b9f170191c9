/* emonext GUI: tabs, photo and video uploads, the webcam loop. Plain JavaScript, no libraries. */
"use strict";

const CONFIG = JSON.parse(document.getElementById("page-config").textContent);

/* One colour per emotion, the annotated pictures' (emonext.inference.annotate.emotion_colour). */
const colourOf = (label) => CONFIG.colours[label] || "#0891b2";
/* Black or white text, whichever reads better on the badge (as in the annotated pictures). */
function inkOn(hex) {
  const [red, green, blue] = [1, 3, 5].map((start) => parseInt(hex.slice(start, start + 2), 16));
  return 0.299 * red + 0.587 * green + 0.114 * blue > 150 ? "#000" : "#fff";
}
const percent = (value) => `${Math.round(value * 100)}%`;
const $ = (id) => document.getElementById(id);

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "text") node.textContent = value;
    else if (key === "style") Object.assign(node.style, value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function showError(box, message) {
  box.textContent = message;
  box.hidden = false;
}

function clearError(box) {
  box.textContent = "";
  box.hidden = true;
}

/* The server answers every error as {"error": "..."}; anything else (a proxy page, a dropped
   connection) still becomes one readable sentence, never raw HTML or a stack trace. */
async function readJson(response) {
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const message = body && typeof body.error === "string"
      ? body.error
      : `The server answered ${response.status} ${response.statusText}.`;
    throw new Error(message);
  }
  if (body === null) throw new Error("The server sent an unreadable answer.");
  return body;
}

async function post(url, file, filename) {
  const form = new FormData();
  form.append("file", file, filename);
  let response;
  try {
    response = await fetch(url, { method: "POST", body: form });
  } catch (_) {
    throw new Error("Could not reach the emonext app: is it still running?");
  }
  return readJson(response);
}

/* Like post(), reporting the upload's progress (0..1): a large video takes a while to send, and
   fetch() cannot tell how far it got. */
function postWithProgress(url, file, filename, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("file", file, filename);
    const request = new XMLHttpRequest();
    request.open("POST", url);
    request.responseType = "text";
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    request.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(request.responseText);
      } catch (_) {
        body = null;
      }
      if (request.status >= 200 && request.status < 300 && body) resolve(body);
      else if (body && typeof body.error === "string") reject(new Error(body.error));
      else reject(new Error(`The server answered ${request.status} ${request.statusText}.`));
    });
    request.addEventListener("error", () => reject(new Error("Could not reach the emonext app: is it still running?")));
    request.send(form);
  });
}

/* Refuse an oversized file before uploading it (the server refuses it too). */
function checkSize(file) {
  if (file.size > CONFIG.maxUploadBytes) {
    const size = (file.size / (1024 * 1024)).toFixed(1);
    throw new Error(`${file.name} is too large (${size} MB): the limit is ${CONFIG.maxUploadText}. Please choose a smaller file.`);
  }
}

/* -- tabs ------------------------------------------------------------------------------------ */

const tabs = Array.from(document.querySelectorAll('[role="tab"]'));

function selectTab(tab) {
  for (const other of tabs) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    $(other.getAttribute("aria-controls")).hidden = !selected;
  }
  if (tab.id !== "tab-webcam") stopWebcam();
}

tabs.forEach((tab, index) => {
  tab.addEventListener("click", () => selectTab(tab));
  tab.addEventListener("keydown", (event) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (!step) return;
    const next = tabs[(index + step + tabs.length) % tabs.length];
    next.focus();
    selectTab(next);
  });
});

/* -- probability bars ------------------------------------------------------------------------ */

function probabilityTable(face, caption) {
  const table = el("table", { class: "bars" });
  table.append(el("caption", { class: "visually-hidden", text: caption }));
  const body = el("tbody");
  for (const name of CONFIG.classes) {
    const value = face.probabilities[name] ?? 0;
    const fill = el("div", { class: "fill", style: { width: `${(value * 100).toFixed(1)}%`, background: colourOf(name) } });
    const row = el(
      "tr",
      { class: name === face.label ? "top" : "", "data-testid": "probability-row", "data-class": name },
      el("th", { scope: "row", text: name }),
      el("td", {}, el("div", { class: "track", role: "presentation" }, fill)),
      el("td", { class: "value", text: percent(value) }),
    );
    body.append(row);
  }
  table.append(body);
  return table;
}

/* -- photo tab ------------------------------------------------------------------------------- */

const imageForm = $("image-form");
const imageInput = $("image-file");

function renderImageResult(result) {
  const faces = result.faces;
  $("image-summary").textContent = faces.length
    ? `${faces.length} face${faces.length === 1 ? "" : "s"} found in ${result.file}`
    : result.message || `No face was found in ${result.file}.`;
  const image = $("image-annotated");
  image.src = result.annotated_url;
  image.alt = faces.length
    ? `${result.file} with ${faces.length} face${faces.length === 1 ? "" : "s"} boxed: ` +
      faces.map((face, i) => `face ${i + 1} ${face.label}`).join(", ")
    : `${result.file}; no face was found`;
  $("image-download").href = result.annotated_url;
  $("json-download").href = result.json_url;

  const list = $("face-list");
  list.replaceChildren();
  faces.forEach((face, index) => {
    const number = index + 1;
    const title = el(
      "h3", {},
      `Face ${number}: `,
      el("span", { "data-testid": "face-label", text: face.label }),
      " ",
      el("span", { "data-testid": "face-confidence", text: `(${percent(face.confidence)})` }),
    );
    const views = el("div", { class: "views" });
    if (face.stn_url) {
      views.append(el("figure", {},
        el("img", {
          src: face.stn_url,
          alt: `Face ${number}: on the left as cut from the photo, on the right after the model's Spatial Transformer aligned it`,
          "data-testid": "stn-view",
        }),
        el("figcaption", { text: "The face the model saw, and after its STN alignment" })));
    }
    list.append(el("li", { class: "face", "data-testid": "face" }, title, views,
      probabilityTable(face, `Probabilities of face ${number}`)));
  });

  $("image-json").textContent = JSON.stringify(result, null, 2);
  $("image-result").hidden = false;
}

async function analyseImage() {
  const file = imageInput.files[0];
  const status = $("image-status");
  clearError($("image-error"));
  if (!file) {
    showError($("image-error"), "Choose a photo first.");
    return;
  }
  $("image-result").hidden = true;
  status.textContent = `Analysing ${file.name}…`;
  try {
    checkSize(file);
    const result = await post("/api/image", file, file.name);
    renderImageResult(result);
    status.textContent = `Done in ${result.seconds.toFixed(1)} s.`;
  } catch (error) {
    status.textContent = "";
    showError($("image-error"), error.message);
  }
}

imageForm.addEventListener("submit", (event) => {
  event.preventDefault();
  analyseImage();
});
imageInput.addEventListener("change", () => {
  if (imageInput.files.length) analyseImage();
});

/* -- video tab ------------------------------------------------------------------------------- */

const videoForm = $("video-form");
const videoInput = $("video-file");
let currentJob = null;

function setProgress(fraction, label) {
  const value = Math.round(Math.max(0, Math.min(1, fraction)) * 100);
  $("video-bar").value = value;
  $("video-percent").textContent = `${value}%`;
  $("video-bar").setAttribute("aria-valuetext", `${value}% done`);
  if (label) $("video-progress-label").textContent = label;
}

function renderVideoResult(result) {
  const player = $("video-player");
  player.src = result.video_url;
  $("video-download").href = result.video_url;
  $("csv-download").href = result.csv_url;
  const summaryLink = $("summary-download");
  summaryLink.hidden = !result.summary_url;
  if (result.summary_url) summaryLink.href = result.summary_url;
  const timelines = $("timelines");
  timelines.replaceChildren();
  for (const timeline of result.timelines || []) {
    timelines.append(el("figure", {},
      el("img", { src: timeline.url, alt: `Emotion probabilities over time for ${timeline.name}, mostly ${timeline.dominant}`, "data-testid": "timeline" }),
      el("figcaption", { text: `${timeline.name}: mostly ${timeline.dominant}` })));
  }
  if (!(result.timelines || []).length) timelines.append(el("p", { text: "No face was tracked in this video." }));
  $("video-summary").textContent = [result.summary || "", ...(result.warnings || [])].join("\n");
  $("video-result").hidden = false;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function followJob(job) {
  currentJob = job.id;
  while (currentJob === job.id) {
    let state;
    try {
      state = await readJson(await fetch(`/api/jobs/${job.id}`));
    } catch (error) {
      throw new Error(error.message.startsWith("Failed") ? "Lost contact with the emonext app." : error.message);
    }
    if (state.status === "queued") setProgress(0, "Waiting for the previous video to finish…");
    if (state.status === "running") {
      setProgress(state.progress, `Analysing ${state.filename}…`);
      const elapsed = state.elapsed_s || 0;
      const left = state.progress > 0.02 ? Math.round(elapsed * (1 - state.progress) / state.progress) : null;
      $("video-status").textContent = left === null ? "Starting…" : `About ${left} s left.`;
    }
    if (state.status === "done") return state;
    if (state.status === "error") throw new Error(state.message);
    if (state.status === "cancelled") throw new Error(`The analysis of ${state.filename} was cancelled.`);
    await sleep(500);
  }
  return null;
}

async function analyseVideo() {
  const file = videoInput.files[0];
  clearError($("video-error"));
  if (!file) {
    showError($("video-error"), "Choose a video first.");
    return;
  }
  $("video-result").hidden = true;
  $("video-progress").hidden = false;
  setProgress(0, `Uploading ${file.name}…`);
  $("video-status").textContent = "";
  try {
    checkSize(file);
    const job = await postWithProgress("/api/video", file, file.name, (fraction) => {
      setProgress(fraction, `Uploading ${file.name}…`);
    });
    setProgress(0, `Analysing ${file.name}…`);
    const state = await followJob(job);
    if (state) {
      setProgress(1, `${state.filename} is done.`);
      $("video-status").textContent = `Done in ${Math.round(state.elapsed_s)} s.`;
      renderVideoResult(state.result);
    }
  } catch (error) {
    $("video-status").textContent = "";
    showError($("video-error"), error.message);
  } finally {
    $("video-progress").hidden = true;
    currentJob = null;
  }
}

videoForm.addEventListener("submit", (event) => {
  event.preventDefault();
  analyseVideo();
});
videoInput.addEventListener("change", () => {
  if (videoInput.files.length) analyseVideo();
});
$("video-cancel").addEventListener("click", () => {
  if (currentJob) fetch(`/api/jobs/${currentJob}`, { method: "DELETE" }).catch(() => {});
});

/* -- webcam tab ------------------------------------------------------------------------------ */

const webcamVideo = $("webcam-video");
const overlay = $("webcam-overlay");
/* Frames are scaled down before upload: the detector works at a few hundred pixels anyway. */
const FRAME_SIDE = 480;
/* At most this often, and only one frame in flight: the loop runs as fast as the CPU answers. */
const MIN_INTERVAL_MS = 100;
let stream = null;
let running = false;

/* Identifies this tab's frames: the server tracks faces per tab (stable ids, smoothing). */
const SESSION = (window.crypto && crypto.randomUUID) ? crypto.randomUUID() : String(Math.random()).slice(2);

function drawFaces(faces, scale) {
  const width = webcamVideo.videoWidth;
  const height = webcamVideo.videoHeight;
  overlay.width = width;
  overlay.height = height;
  const context = overlay.getContext("2d");
  context.clearRect(0, 0, width, height);
  const line = Math.max(2, Math.round(width / 250));
  context.font = `${Math.max(14, Math.round(width / 35))}px system-ui, sans-serif`;
  context.textBaseline = "top";
  faces.forEach((face, index) => {
    const box = { x: face.box.x / scale, y: face.box.y / scale, w: face.box.width / scale, h: face.box.height / scale };
    const colour = colourOf(face.label);
    context.lineWidth = line;
    context.strokeStyle = colour;
    context.strokeRect(box.x, box.y, box.w, box.h);
    const text = `#${face.id ?? index + 1} ${face.label} ${percent(face.confidence)}`;
    const metrics = context.measureText(text);
    const textHeight = parseInt(context.font, 10) + 2 * line;
    const top = box.y - textHeight >= 0 ? box.y - textHeight : box.y;
    context.fillStyle = colour;
    context.fillRect(box.x, top, metrics.width + 2 * line, textHeight);
    context.fillStyle = inkOn(colour);
    context.fillText(text, box.x + line, top + line);
  });
  const list = $("webcam-faces");
  list.replaceChildren(...faces.map((face, index) => el("li", {},
    `Face #${face.id ?? index + 1}: `, el("span", { "data-testid": "face-label", text: face.label }), ` (${percent(face.confidence)})`)));
}

function grabFrame(canvas) {
  const width = webcamVideo.videoWidth;
  const height = webcamVideo.videoHeight;
  const scale = Math.min(1, FRAME_SIDE / Math.max(width, height));
  canvas.width = Math.round(width * scale);
  canvas.height = Math.round(height * scale);
  canvas.getContext("2d").drawImage(webcamVideo, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve) => canvas.toBlob((blob) => resolve({ blob, scale }), "image/jpeg", 0.85));
}

async function webcamLoop() {
  const canvas = document.createElement("canvas");
  let frames = 0;
  let windowStart = performance.now();
  while (running) {
    const started = performance.now();
    if (!webcamVideo.videoWidth) {
      await sleep(100);
      continue;
    }
    try {
      const { blob, scale } = await grabFrame(canvas);
      if (!running) break;
      const result = await post(`/api/frame?session=${encodeURIComponent(SESSION)}`, blob, "frame.jpg");
      if (!running) break;
      drawFaces(result.faces, scale);
      clearError($("webcam-error"));
      frames += 1;
      const now = performance.now();
      if (now - windowStart > 2000) {
        const rate = (frames * 1000) / (now - windowStart);
        $("webcam-status").textContent = `Analysing about ${rate.toFixed(1)} frames per second.`;
        frames = 0;
        windowStart = now;
      }
    } catch (error) {
      showError($("webcam-error"), error.message);
      await sleep(1000);
    }
    await sleep(Math.max(0, MIN_INTERVAL_MS - (performance.now() - started)));
  }
}

async function startWebcam() {
  clearError($("webcam-error"));
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError($("webcam-error"), "This browser cannot use a camera here. Open the app at http://127.0.0.1 or http://localhost in a recent browser.");
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
  } catch (error) {
    const reasons = {
      NotAllowedError: "Camera access was refused. Allow the camera for this page in the browser and try again.",
      NotFoundError: "No camera was found on this computer.",
      NotReadableError: "The camera is in use by another program.",
    };
    showError($("webcam-error"), reasons[error.name] || `The camera could not be started (${error.name}).`);
    return;
  }
  webcamVideo.srcObject = stream;
  running = true;
  $("webcam-start").disabled = true;
  $("webcam-stop").disabled = false;
  $("webcam-status").textContent = "Camera on: analysing…";
  webcamLoop();
}

function stopWebcam() {
  running = false;
  if (stream) stream.getTracks().forEach((track) => track.stop());
  stream = null;
  webcamVideo.srcObject = null;
  overlay.getContext("2d").clearRect(0, 0, overlay.width, overlay.height);
  $("webcam-start").disabled = false;
  $("webcam-stop").disabled = true;
  if ($("webcam-status").textContent) $("webcam-status").textContent = "Camera off.";
}

$("webcam-start").addEventListener("click", startWebcam);
$("webcam-stop").addEventListener("click", stopWebcam);
window.addEventListener("pagehide", stopWebcam);
