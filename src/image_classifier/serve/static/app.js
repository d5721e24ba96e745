// The page's behaviour. Everything from the server (class names come from folder names and may be
// anything, "<script>" included) is put into the page with textContent, never as HTML.
// Every text the script writes comes from the page's language catalog, which the server puts in
// <html data-messages> (see image_classifier/i18n.py); nothing here is in one language.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const state = { models: [], byName: new Map(), current: null, limits: null, file: null, seq: 0, previewUrl: null,
    why: false, explanation: null };

  const MESSAGES = JSON.parse(document.documentElement.dataset.messages || "{}");
  const DECIMAL = document.documentElement.dataset.decimal || ".";
  // A message with its {placeholders} filled in one pass, so a value (a class name may be "{n}")
  // is never read as a placeholder itself.
  const t = (key, params = {}) => {
    const message = MESSAGES[key];
    if (message === undefined) {
      console.error(`no message ${key}`);
      return key;
    }
    return message.replace(/\{(\w+)\}/g, (whole, name) =>
      (Object.prototype.hasOwnProperty.call(params, name) ? String(params[name]) : whole));
  };
  const decimal = (text) => text.replace(".", DECIMAL);
  const pct = (p) => t("page.percent", { value: decimal((100 * p).toFixed(1)) });
  const pctWhole = (p) => t("page.percent", { value: Math.round(100 * p).toString() });
  const ms = (v) => t("page.ms", { value: v < 10 ? decimal(v.toFixed(1)) : Math.round(v).toString() });
  const mb = (bytes) => t("page.mb",
    { value: decimal(String(parseFloat((bytes / 1024 / 1024).toFixed(bytes < 1024 * 1024 ? 2 : 1)))) });
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
          showError(body.error || t("page.error.load_failed"));
          return false;
        }
        setStatus(t("page.status.loading"));
      } catch (err) {
        setStatus(t("page.status.retrying"));
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
        option.textContent = m.default ? t("page.model.best", { name: m.name }) : m.name;
        return option;
      }));
    }
    select.value = state.current;
    $("model-name").textContent = state.current;
    renderModelInfo();
    if (state.limits) {
      $("limit-hint").textContent = t("page.drop.formats_limit", { size: mb(state.limits.max_upload_bytes) });
    }
  }

  function renderModelInfo() {
    const m = state.byName.get(state.current);
    if (!m) return;
    $("info-arch").textContent = m.backend && m.backend !== "torch" ? `${m.architecture} (${m.backend})` : m.architecture;
    if (m.test && typeof m.test.accuracy === "number") {
      let text = pct(m.test.accuracy);
      if (Array.isArray(m.test.accuracy_ci95)) {
        text = t("page.accuracy.ci", { accuracy: text, low: pct(m.test.accuracy_ci95[0]), high: pct(m.test.accuracy_ci95[1]) });
      }
      if (m.test.n) text = t("page.accuracy.n", { accuracy: text, n: m.test.n });
      $("info-accuracy").textContent = text;
    } else {
      $("info-accuracy").textContent = t("page.accuracy.none");
    }
    const parts = [];
    parts.push(m.latency_ms_median == null
      ? t("page.latency.none")
      : t("page.latency.median", { ms: ms(m.latency_ms_median), n: Math.min(m.requests, 200) }));
    if (m.offline_latency_ms != null) parts.push(t("page.latency.offline", { ms: ms(m.offline_latency_ms) }));
    $("info-latency").textContent = parts.join(" · ");
    $("info-classes").textContent = m.classes.join(", ");
    // A model that accepted too many strangers when the run chose what to serve says so plainly.
    const s = m.strangers;
    const warn = s && typeof s.limit === "number" && s.accepted > s.limit;
    $("strangers-note").hidden = !warn;
    $("strangers-note").textContent = warn ? t("page.strangers.warning", { rate: pct(s.accepted) }) : "";
  }

  function showPreview(file) {
    $("face-box").hidden = true;
    $("face-boxes").replaceChildren();
    state.explanation = null;
    hideWhy();
    if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
    state.previewUrl = URL.createObjectURL(file);
    const img = $("preview");
    $("preview-box").hidden = false;
    img.src = state.previewUrl;
    $("preview-name").textContent = t("page.preview.name", { name: file.name || t("page.preview.pasted"), size: mb(file.size) });
    $("result-card").hidden = false;
  }

  // Where a box [x0, y0, x1, y1] in the photo's own pixels lands on the preview (CSSOM: allowed by the CSP).
  function place(element, face, size) {
    const [w, h] = size;
    element.style.left = `${(100 * face[0]) / w}%`;
    element.style.top = `${(100 * face[1]) / h}%`;
    element.style.width = `${(100 * (face[2] - face[0])) / w}%`;
    element.style.height = `${(100 * (face[3] - face[1])) / h}%`;
  }

  // What one face is, on its tag: a class name, "unknown", or "?" for a face without a descriptor.
  function faceName(face) {
    if (face.label === null || face.label === undefined) return t("page.face.not_described");
    return face.unknown ? t("page.face.unknown_face") : face.label;
  }

  // A face model returns the box of the face that decided, in the photo's own pixels, and every
  // face found with its own answer: each gets a box and a name (the deciding one the accent box).
  function renderFaceBox(body) {
    const box = $("face-box");
    const face = body.face;
    const faces = Array.isArray(body.faces) && body.image_size ? body.faces : [];
    const decided = faces.find((f) => f.decided);
    box.hidden = !(face && body.image_size);
    $("face-box-name").textContent = decided ? faceName(decided) : "";
    $("face-boxes").replaceChildren(...faces.filter((f) => !f.decided).map((f) => {
      const tag = document.createElement("div");
      tag.className = f.unknown ? "face-tag unknown" : "face-tag";
      place(tag, f.box, body.image_size);
      tag.title = t("page.face.tag_title", { method: f.method });
      const name = document.createElement("span");
      name.className = "face-name";
      name.textContent = faceName(f);
      tag.append(name);
      return tag;
    }));
    if (box.hidden) return;
    place(box, face, body.image_size);
    box.title = t("page.face.title", { method: body.face_method });
  }

  function decidedBy(body) {
    if (!("face" in body)) return "";
    if (body.face) return ` · ${t("page.face.decided")}`;
    return ` · ${t(body.faces_found ? "page.face.unknown" : "page.face.none")}`;
  }

  // "why?": the API's explanation (?explain=1) is a PNG of the photo with the heat map (or the
  // deciding face boxed), in the photo's proportions, laid over the preview.
  function hideWhy() {
    $("why-overlay").hidden = true;
    $("why-overlay").removeAttribute("src");
    $("why-note").hidden = true;
    $("why-note").textContent = "";
  }

  function whyNote(text) {
    $("why-note").textContent = text;
    $("why-note").hidden = !text;
  }

  function renderWhy(explanation) {
    if (!explanation) { hideWhy(); return; }
    const overlay = $("why-overlay");
    overlay.src = `data:image/png;base64,${explanation.png_base64}`;
    overlay.hidden = false;
    whyNote(explanation.method === "face"
      ? t("page.why.face", { label: explanation.target })
      : t("page.why.gradcam", { label: explanation.target, layer: explanation.layer }));
  }

  // Asks for the explanation of the photo on show (the answer itself is already on the page).
  async function fetchWhy() {
    const seq = state.seq;
    whyNote(t("page.why.working"));
    const form = new FormData();
    form.append("file", state.file, state.file.name || "pasted-image");
    if (state.current) form.append("model", state.current);
    form.append("explain", "1");
    let response, body;
    try {
      response = await fetch("/api/predict", { method: "POST", body: form });
      body = await response.json().catch(() => ({}));
    } catch (err) {
      if (seq === state.seq && state.why) whyNote(t("page.why.failed", { message: t("page.error.unreachable") }));
      return;
    }
    if (seq !== state.seq || !state.why) return;  // another photo, or the toggle was turned off
    if (!response.ok || !body.explanation) {
      whyNote(t("page.why.failed", { message: sentence(body.error || `HTTP ${response.status}`) }));
      return;
    }
    state.explanation = body.explanation;
    renderWhy(state.explanation);
  }

  function toggleWhy() {
    state.why = !state.why;
    $("why-toggle").setAttribute("aria-pressed", String(state.why));
    if (!state.why) hideWhy();
    else if (state.explanation) renderWhy(state.explanation);
    else if (state.file && !$("result").hidden) fetchWhy();
  }

  // "None of these" (the model's rejection rule, when it has one): the closest class is still said.
  // The API without a rejection rule sends no "unknown": the answer is then one of the classes.
  function renderVerdict(body) {
    const unknown = body.unknown === true;
    const top = (body.top && body.top[0]) || { label: body.label, probability: body.probabilities[body.label] };
    const closest = body.closest || top;
    $("result-label").classList.toggle("unknown", unknown);
    if (unknown) {
      $("result-label").textContent = t("page.unknown.label");
      $("result-probability").textContent = t("page.unknown.closest",
        { label: closest.label, probability: pctWhole(closest.probability) });
    } else {
      $("result-label").textContent = body.label;
      $("result-probability").textContent = pct(body.probabilities[body.label]);
    }
  }

  function renderResult(body, roundTripMs) {
    renderFaceBox(body);
    renderVerdict(body);
    state.explanation = body.explanation || null;
    if (!state.why) hideWhy();
    else if (state.explanation) renderWhy(state.explanation);
    else fetchWhy();  // "why?" was turned on while this answer was on its way
    const timing = body.timing;
    const details = [t("face" in body ? "page.meta.decode_faces" : "page.meta.decode", { ms: ms(timing.decode_ms) })];
    if (timing.queue_ms >= 1) details.push(t("page.meta.queued", { ms: ms(timing.queue_ms) }));
    details.push(timing.batch_size > 1
      ? t("page.meta.model_batch", { ms: ms(timing.inference_ms), n: timing.batch_size })
      : t("page.meta.model", { ms: ms(timing.inference_ms) }));
    $("result-meta").textContent = [
      body.model,
      t("page.meta.server", { ms: ms(body.latency_ms), details: details.join(", ") }),
      t("page.meta.round_trip", { ms: ms(roundTripMs) }),
    ].join(" · ") + decidedBy(body);
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

  // The server's explanations are in English (the API is the same in every language): the page
  // says in its own language what went wrong and quotes the server for the details.
  function explain(status, message) {
    const detail = sentence(message);
    if (status === 415) {
      return t(/^not an image/i.test(message || "") ? "page.error.not_image" : "page.error.unsupported", { message: detail });
    }
    if (status === 400) return t("page.error.unreadable", { message: detail });
    return detail ? t("page.error.server", { message: detail }) : t("page.error.http", { status });
  }

  async function classify(file) {
    if (!file) return;
    state.file = file;
    hideError();
    $("result").hidden = true;
    if (state.limits && file.size > state.limits.max_upload_bytes) {
      $("result-card").hidden = true;
      showError(t("page.error.too_big", { size: mb(file.size), limit: mb(state.limits.max_upload_bytes) }));
      return;
    }
    showPreview(file);
    const seq = ++state.seq;
    setStatus(t("page.status.classifying"));
    const form = new FormData();
    form.append("file", file, file.name || "pasted-image");
    if (state.current) form.append("model", state.current);
    const t0 = performance.now();
    let response, body;
    try {
      response = await fetch(state.why ? "/api/predict?explain=1" : "/api/predict", { method: "POST", body: form });
      body = await response.json().catch(() => ({}));
    } catch (err) {
      if (seq === state.seq) showError(t("page.error.unreachable"));
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
      if (file) classify(file); else showError(t("page.error.drop"));
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
    $("why-toggle").addEventListener("click", toggleWhy);
  }

  async function start() {
    wire();
    if (!(await waitUntilReady())) return;
    try {
      await loadModels();
      setStatus(t("page.status.ready"));
      document.body.dataset.ready = "true";
    } catch (err) {
      showError(t("page.error.models", { message: err.message }));
    }
  }

  start();
})();
