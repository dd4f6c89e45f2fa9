// margin's web UI: uploads with per-file progress, the document list, and
// questions answered as a stream with their citations. No framework, nothing
// fetched from elsewhere: the binary serves this file as it is.
"use strict";

const $ = (id) => document.getElementById(id);
const PAGE = 100;
let shown = 0;

// The key travels in the URL fragment (never sent to the server as part of a
// URL) the first time, then lives in this tab's session storage.
function initKey() {
  const match = location.hash.match(/key=([^&]+)/);
  if (match) {
    try {
      sessionStorage.setItem("margin-key", decodeURIComponent(match[1]));
    } catch { /* a malformed fragment: the key field stays as it was */ }
    history.replaceState(null, "", location.pathname);
  }
  $("api-key").value = sessionStorage.getItem("margin-key") || "";
  $("api-key").addEventListener("change", (e) => sessionStorage.setItem("margin-key", e.target.value.trim()));
}

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.error ? body.error.message : response.statusText;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

function initTheme() {
  const button = $("theme");
  const apply = (theme) => {
    document.documentElement.dataset.theme = theme;
    button.setAttribute("aria-pressed", String(theme === "dark"));
    button.textContent = theme === "dark" ? "Light theme" : "Dark theme";
  };
  const stored = localStorage.getItem("margin-theme");
  apply(stored || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"));
  button.addEventListener("click", () => {
    const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    localStorage.setItem("margin-theme", next);
    apply(next);
  });
}

// ---- uploads ---------------------------------------------------------------

function uploadRow(file) {
  const li = document.createElement("li");
  const name = document.createElement("span");
  name.className = "file-name";
  name.textContent = file.name;
  const bar = document.createElement("progress");
  bar.max = 100;
  bar.value = 0;
  bar.setAttribute("aria-label", `${file.name}: progress`);
  const state = document.createElement("span");
  state.className = "file-state";
  state.textContent = "uploading";
  li.append(name, bar, state);
  $("uploads").prepend(li);
  return {
    progress: (fraction) => { bar.value = Math.round(fraction * 100); },
    state: (text, kind) => {
      state.textContent = text;
      li.dataset.state = kind || "";
    },
  };
}

// One request per file, so each has its own upload progress and job.
function uploadFile(file) {
  const row = uploadRow(file);
  const form = new FormData();
  form.append("files", file, file.name);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/v1/documents");
  for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
  xhr.upload.addEventListener("progress", (e) => {
    if (e.lengthComputable) row.progress(0.5 * e.loaded / e.total);
  });
  xhr.addEventListener("error", () => row.state("upload failed: the server could not be reached", "failed"));
  xhr.addEventListener("load", () => {
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
    if (xhr.status !== 202) {
      row.state(body.error ? body.error.message : `upload failed (${xhr.status})`, "failed");
      return;
    }
    row.progress(0.5);
    row.state("queued for indexing", "queued");
    followJob(body.job.id, row);
  });
  xhr.send(form);
}

async function followJob(id, row) {
  for (;;) {
    let response;
    try {
      response = await fetch(`/v1/jobs/${id}`, { headers: authHeaders() });
    } catch {
      row.state("lost contact with the server; refresh the document list later", "failed");
      return;
    }
    if (!response.ok) {
      row.state(await errorText(response), "failed");
      return;
    }
    const job = await response.json();
    const file = job.files[0];
    if (job.passages_total > 0) row.progress(0.5 + 0.5 * job.passages_done / job.passages_total);
    if (file.status === "failed") {
      row.state(file.error || job.error || "failed", "failed");
      return;
    }
    if (file.status === "indexed") {
      row.progress(1);
      row.state(`indexed: ${file.passages} passages`, "indexed");
      loadDocuments(true);
      return;
    }
    row.state(file.status === "indexing" ? `indexing ${job.passages_done}/${job.passages_total} passages` : "queued for indexing", "queued");
    await new Promise((r) => setTimeout(r, 500));
  }
}

function initUploads() {
  const drop = $("drop");
  const input = $("files");
  const send = (files) => { for (const f of files) uploadFile(f); };
  input.addEventListener("change", () => { send(input.files); input.value = ""; });
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); }
  });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => { e.preventDefault(); send(e.dataTransfer.files); });
}

// ---- documents -------------------------------------------------------------

// Each load supersedes the ones before it, so rows are never listed twice.
let listing = 0;

async function loadDocuments(reset) {
  const mine = ++listing;
  const offset = reset ? 0 : shown;
  let response;
  try {
    response = await fetch(`/v1/documents?offset=${offset}&limit=${PAGE}`, { headers: authHeaders() });
  } catch {
    $("doc-count").textContent = "Indexed documents: the server could not be reached";
    return;
  }
  if (mine !== listing) return;
  if (!response.ok) {
    $("doc-count").textContent = `Indexed documents: ${await errorText(response)}`;
    return;
  }
  const page = await response.json();
  if (mine !== listing) return;
  if (reset) { shown = 0; $("documents").replaceChildren(); }
  for (const doc of page.documents) $("documents").append(documentRow(doc));
  shown += page.documents.length;
  $("doc-count").textContent = `Indexed documents (${page.total})`;
  $("more").hidden = shown >= page.total;
}

// A bold title followed by muted details, as text (never parsed as HTML).
function titled(container, title, details) {
  const strong = document.createElement("strong");
  strong.textContent = title;
  const meta = document.createElement("span");
  meta.className = "help";
  meta.textContent = ` ${details}`;
  container.append(strong, meta);
  return container;
}

function documentRow(doc) {
  const li = document.createElement("li");
  const text = titled(document.createElement("span"), doc.title || doc.doc_id, `${doc.source} · ${doc.passages} passages`);
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = "Delete";
  button.setAttribute("aria-label", `Delete ${doc.title || doc.doc_id}`);
  button.addEventListener("click", async () => {
    if (!confirm(`Delete “${doc.title || doc.doc_id}” from the index?`)) return;
    const response = await fetch(`/v1/documents/${encodeURIComponent(doc.doc_id)}`, { method: "DELETE", headers: authHeaders() });
    if (response.ok) loadDocuments(true);
    else alert(await errorText(response));
  });
  li.append(text, button);
  return li;
}

// ---- asking ----------------------------------------------------------------

// Reads a text/event-stream body, calling on(event, data) per event.
async function readEvents(response, on) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) on(event, JSON.parse(data.join("\n")));
    }
  }
}

let asking = false;

async function ask(e) {
  e.preventDefault();
  const question = $("question").value.trim();
  // One question at a time: Enter while one streams does nothing.
  if (!question || asking) return;
  asking = true;
  const button = $("ask-button");
  button.disabled = true;
  $("status").textContent = "Retrieving and generating…";
  $("answer").textContent = "";
  $("timings").textContent = "";
  $("citations").replaceChildren();
  $("chart-figure").hidden = true;
  const body = {
    question,
    mode: $("mode").value,
    decoding: $("decoding").value,
    n_docs: Number($("n-docs").value) || 5,
    stream: true,
  };
  try {
    const response = await fetch("/v1/ask", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...authHeaders() },
      body: JSON.stringify(body),
    });
    if (!response.ok) throw new Error(await errorText(response));
    let answered = false;
    await readEvents(response, (event, data) => {
      if (event === "token") $("answer").textContent = data.partial;
      else if (event === "answer") { answered = true; showAnswer(data); }
      else if (event === "error") throw new Error(data.error.message);
    });
    if (!answered) throw new Error("the answer stream ended early");
    $("status").textContent = "Done.";
  } catch (err) {
    $("status").textContent = `Error: ${err.message}`;
  } finally {
    asking = false;
    button.disabled = false;
  }
}

function showAnswer(data) {
  $("answer").textContent = data.answer || "(empty answer)";
  const t = data.timings_ms;
  $("timings").textContent = `RAG-${data.mode.replace(/^./, (m) => m.toUpperCase())} with ${data.model}: ${Math.round(t.total)} ms (retrieve ${Math.round(t.retrieve)}, queue ${Math.round(t.queue)}, prefill ${Math.round(t.prefill)}, decode ${Math.round(t.decode)}, rescore ${Math.round(t.rescore)}, attribute ${Math.round(t.attribute)}); batch of ${data.batch_size}`;
  data.citations.forEach((c, i) => {
    const li = document.createElement("li");
    const head = titled(document.createElement("p"), c.title || c.doc_id,
      `${c.source} · ${c.passage_id} · prior ${c.prior.toFixed(3)} · posterior ${c.posterior.toFixed(3)}`);
    const snippet = document.createElement("p");
    snippet.className = "snippet";
    snippet.textContent = c.snippet;
    li.append(head, snippet);
    li.dataset.index = String(i + 1);
    $("citations").append(li);
  });
  drawChart(data.citations);
}

// Grouped bars: prior and posterior per passage, numbered as in the list.
function drawChart(citations) {
  const ns = "http://www.w3.org/2000/svg";
  const width = 40 + citations.length * 48, height = 140, base = 110, top = 10;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", String(width));
  svg.setAttribute("role", "img");
  const summary = citations.map((c, i) => `passage ${i + 1}: prior ${c.prior.toFixed(2)}, posterior ${c.posterior.toFixed(2)}`).join("; ");
  svg.setAttribute("aria-label", `Prior and posterior per passage. ${summary}`);
  const line = document.createElementNS(ns, "line");
  Object.entries({ x1: 30, x2: width, y1: base, y2: base, class: "axis" }).forEach(([k, v]) => line.setAttribute(k, v));
  svg.append(line);
  for (const [label, y] of [["1", top], ["0", base]]) {
    const t = document.createElementNS(ns, "text");
    Object.entries({ x: 22, y: y + 4, class: "tick" }).forEach(([k, v]) => t.setAttribute(k, v));
    t.textContent = label;
    svg.append(t);
  }
  citations.forEach((c, i) => {
    const x = 40 + i * 48;
    [["prior", c.prior], ["posterior", c.posterior]].forEach(([kind, value], j) => {
      const h = Math.max(0, Math.min(1, value)) * (base - top);
      const rect = document.createElementNS(ns, "rect");
      Object.entries({ x: x + j * 18, y: base - h, width: 16, height: h, class: `bar ${kind}` }).forEach(([k, v]) => rect.setAttribute(k, v));
      const tip = document.createElementNS(ns, "title");
      tip.textContent = `passage ${i + 1} ${kind}: ${value.toFixed(3)}`;
      rect.append(tip);
      svg.append(rect);
    });
    const t = document.createElementNS(ns, "text");
    Object.entries({ x: x + 17, y: base + 16, class: "tick", "text-anchor": "middle" }).forEach(([k, v]) => t.setAttribute(k, v));
    t.textContent = String(i + 1);
    svg.append(t);
  });
  $("chart").replaceChildren(svg);
  $("chart-figure").hidden = false;
}

document.addEventListener("DOMContentLoaded", () => {
  initKey();
  initTheme();
  initUploads();
  $("refresh").addEventListener("click", () => loadDocuments(true));
  $("more").addEventListener("click", () => loadDocuments(false));
  $("mode").addEventListener("change", () => { $("decoding").disabled = $("mode").value !== "sequence"; });
  $("ask").addEventListener("submit", ask);
  $("question").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); $("ask").requestSubmit(); }
  });
  loadDocuments(true);
});
