// The page's behaviour. Everything from the server (class names come from folder names and may be
// anything, "<script>" included) is put into the page with textContent, never as HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const state = { models: [], byName: new Map(), current: null, limits: null, file: null, seq: 0, previewUrl: null };

  const pct = (p) => `${(100 * p).toFixed(1)} %`;
  const ms = (v) => (v < 10 ? v.toFixed(1) : Math.round(v).toString()) + " ms";
  const mb = (bytes) => `${parseFloat((bytes / 1024 / 1024).toFixed(bytes < 1024 * 1024 ? 2 : 1))} MB`;
  const sentence = (text) => {
    const t = String(text || "").trim();
    return t ? t[0].toUpperCase() + t.slice(1) + (/[.!?]$/.test(t) ? "" : ".") : "";
  };
  const sleep = (t) => new Promise((resolve) => setTimeout(resolve, t));

  function setStatus(text) { $("status").textContent = text; }

  function showError(text) {
    const box = $("error");
    box.textContent = text;
    box.hidden = false;
    setStatus("");
  }

  function hideError() { $("error").hidden = true; $("error").textContent = ""; }

  async function getJson(url) {
    const response = await fetch(url, { cache: "no-store" });
    const body = await response.json().catch(() => ({}));
    return { response, body };
  }

  async function waitUntilReady() {
    for (;;) {
      try {
        const { response, body } = await getJson("/api/health");
        if (response.ok) return true;
        if (body.status === "failed") {
          showError(body.error || "The server could not load its models.");
          return false;
        }
        setStatus("Loading the models…");
      } catch (err) {
        setStatus("Cannot reach the server; retrying…");
      }
      await sleep(1000);
    }
  }

  async function loadModels() {
    const { response, body } = await getJson("/api/models");
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
    state.models = body.models;
    state.limits = body.limits;
    state.byName = new Map(body.models.map((m) => [m.name, m]));
    if (!state.current || !state.byName.has(state.current)) state.current = body.default;
    renderModels();
  }

  function renderModels() {
    const select = $("model-select");
    const several = state.models.length > 1;
    select.hidden = !several;
    $("model-name").hidden = several;
    if (several && select.options.length !== state.models.length) {
      select.replaceChildren(...state.models.map((m) => {
        const option = document.createElement("option");
        option.value = m.name;
        option.textContent = m.default ? `${m.name} (best)` : m.name;
        return option;
      }));
    }
    select.value = state.current;
    $("model-name").textContent = state.current;
    renderModelInfo();
    if (state.limits) {
      $("limit-hint").textContent = `JPEG, PNG, WebP, GIF, BMP or TIFF, up to ${mb(state.limits.max_upload_bytes)}`;
    }
  }

  function renderModelInfo() {
    const m = state.byName.get(state.current);
    if (!m) return;
    $("info-arch").textContent = m.backend && m.backend !== "torch" ? `${m.architecture} (${m.backend})` : m.architecture;
    if (m.test && typeof m.test.accuracy === "number") {
      let text = pct(m.test.accuracy);
      if (Array.isArray(m.test.accuracy_ci95)) {
        text += ` (95 % CI ${pct(m.test.accuracy_ci95[0])} – ${pct(m.test.accuracy_ci95[1])})`;
      }
      if (m.test.n) text += ` on ${m.test.n} held-out images`;
      $("info-accuracy").textContent = text;
    } else {
      $("info-accuracy").textContent = "not evaluated";
    }
    const parts = [];
    parts.push(m.latency_ms_median == null
      ? "no request yet"
      : `${ms(m.latency_ms_median)} median here (last ${Math.min(m.requests, 200)} requests)`);
    if (m.offline_latency_ms != null) parts.push(`${ms(m.offline_latency_ms)} in compare's benchmark`);
    $("info-latency").textContent = parts.join(" · ");
    $("info-classes").textContent = m.classes.join(", ");
  }

  function showPreview(file) {
    $("face-box").hidden = true;
    if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
    state.previewUrl = URL.createObjectURL(file);
    const img = $("preview");
    $("preview-box").hidden = false;
    img.src = state.previewUrl;
    $("preview-name").textContent = file.name ? `${file.name} · ${mb(file.size)}` : `pasted image · ${mb(file.size)}`;
    $("result-card").hidden = false;
  }

  // A face model returns the box of the face that decided, in the photo's own pixels.
  function renderFaceBox(body) {
    const box = $("face-box");
    const face = body.face;
    box.hidden = !(face && body.image_size);
    if (box.hidden) return;
    const [w, h] = body.image_size;
    box.style.left = `${(100 * face[0]) / w}%`;
    box.style.top = `${(100 * face[1]) / h}%`;
    box.style.width = `${(100 * (face[2] - face[0])) / w}%`;
    box.style.height = `${(100 * (face[3] - face[1])) / h}%`;
    box.title = `the face that decided (found by ${body.face_method})`;
  }

  function decidedBy(body) {
    if (!("face" in body)) return "";
    if (body.face) return " · decided by the face in the box";
    return body.faces_found ? " · no face like a known person's: decided by the whole photo"
                            : " · no face found: decided by the whole photo";
  }

  function renderResult(body, roundTripMs) {
    renderFaceBox(body);
    $("result-label").textContent = body.label;
    $("result-probability").textContent = pct(body.probabilities[body.label]);
    $("result-meta").textContent =
      `${body.model} · ${ms(body.latency_ms)} in the server (decode${"face" in body ? " + faces" : ""} ${ms(body.timing.decode_ms)}, ` +
      (body.timing.queue_ms >= 1 ? `queued ${ms(body.timing.queue_ms)}, ` : "") +
      `model ${ms(body.timing.inference_ms)}` +
      (body.timing.batch_size > 1 ? ` for a batch of ${body.timing.batch_size}` : "") +
      `) · ${ms(roundTripMs)} round trip` + decidedBy(body);
    const rows = Object.entries(body.probabilities).sort((a, b) => b[1] - a[1]);
    $("bars").replaceChildren(...rows.map(([name, p], i) => {
      const li = document.createElement("li");
      li.className = i === 0 ? "bar top" : "bar";
      const label = document.createElement("span");
      label.className = "bar-name";
      label.textContent = name;
      const value = document.createElement("span");
      value.className = "bar-value";
      value.textContent = pct(p);
      const track = document.createElement("span");
      track.className = "bar-track";
      const fill = document.createElement("span");
      fill.className = "bar-fill";
      fill.style.width = `${Math.max(0, Math.min(100, 100 * p))}%`;  // CSSOM: allowed by the CSP
      track.append(fill);
      li.append(label, value, track);
      return li;
    }));
    $("result").hidden = false;
  }

  function explain(status, message) {
    if (status === 415) return /^not an image/i.test(message || "") ? sentence(message) : `Unsupported file: ${sentence(message)}`;
    if (status === 400) return `This image could not be read: ${sentence(message)}`;
    return sentence(message) || `The server answered HTTP ${status}.`;
  }

  async function classify(file) {
    if (!file) return;
    state.file = file;
    hideError();
    $("result").hidden = true;
    if (state.limits && file.size > state.limits.max_upload_bytes) {
      $("result-card").hidden = true;
      showError(`This file is ${mb(file.size)}, more than the ${mb(state.limits.max_upload_bytes)} the server accepts.`);
      return;
    }
    showPreview(file);
    const seq = ++state.seq;
    setStatus("Classifying…");
    const form = new FormData();
    form.append("file", file, file.name || "pasted-image");
    if (state.current) form.append("model", state.current);
    const t0 = performance.now();
    let response, body;
    try {
      response = await fetch("/api/predict", { method: "POST", body: form });
      body = await response.json().catch(() => ({}));
    } catch (err) {
      if (seq === state.seq) showError("Cannot reach the server. Is `image-classifier serve` still running?");
      return;
    }
    if (seq !== state.seq) return;  // a newer photo or model choice replaced this request
    if (!response.ok) {
      $("preview-box").hidden = response.status === 415;
      if (response.status === 415) $("result-card").hidden = true;
      showError(explain(response.status, body.error));
      return;
    }
    renderResult(body, performance.now() - t0);
    setStatus("");
    loadModels().catch(() => {});  // refresh the latency median
  }

  function firstImageFile(list) {
    for (const item of list || []) {
      const file = item instanceof File ? item : item.kind === "file" ? item.getAsFile() : null;
      if (file) return file;
    }
    return null;
  }

  function wire() {
    const input = $("file-input");
    input.addEventListener("change", () => {
      classify(input.files[0]);
      input.value = "";  // choosing the same file again fires "change" again
    });

    const zone = $("drop-zone");
    for (const type of ["dragenter", "dragover"]) {
      zone.addEventListener(type, (e) => { e.preventDefault(); zone.classList.add("over"); });
    }
    for (const type of ["dragleave", "dragend"]) {
      zone.addEventListener(type, () => zone.classList.remove("over"));
    }
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("over");
      const file = firstImageFile(e.dataTransfer && e.dataTransfer.files);
      if (file) classify(file); else showError("Drop an image file (from your files, not a link from a web page).");
    });
    // A photo dropped next to the zone must not make the browser navigate away to it.
    window.addEventListener("dragover", (e) => e.preventDefault());
    window.addEventListener("drop", (e) => e.preventDefault());

    document.addEventListener("paste", (e) => {
      const data = e.clipboardData;
      const file = data && (firstImageFile(data.files) || firstImageFile(data.items));
      if (file) { e.preventDefault(); classify(file); }
    });

    $("model-select").addEventListener("change", (e) => {
      state.current = e.target.value;
      renderModelInfo();
      $("model-name").textContent = state.current;
      if (state.file) classify(state.file);
    });
    $("preview").addEventListener("error", () => { $("preview-box").hidden = true; });
  }

  async function start() {
    wire();
    if (!(await waitUntilReady())) return;
    try {
      await loadModels();
      setStatus("Ready.");
      document.body.dataset.ready = "true";
    } catch (err) {
      showError(`Cannot list the models: ${err.message}`);
    }
  }

  start();
})();
