// comfycord console: uploads, previews, runs with live progress. Plain JavaScript, no libraries.
// Everything from the server is put on the page as text (textContent), never as HTML.
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text) node.textContent = text;
  return node;
}

function showError(message) {
  const box = document.getElementById("error");
  box.textContent = message;
  box.hidden = !message;
}

// calls the API with the session's cookie and CSRF token; a problem+json answer becomes an Error
async function api(method, url, body) {
  const response = await fetch(url, {
    method,
    body,
    credentials: "same-origin",
    headers: { "X-CSRF-Token": csrfToken(), Accept: "application/json" },
  });
  const type = response.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await response.json() : null;
  if (!response.ok) {
    throw new Error((data && data.detail) || `${response.status} ${response.statusText}`);
  }
  return data;
}

// adding a workflow ------------------------------------------------------------------------------
const PREVIEW_FIELDS = new Set(["name", "title", "checked", "can_save", "options", "blocking"]);
const LIST_TITLES = {
  problems: "Problems",
  repairs: "Repaired",
  notes: "Notes",
  missing_classes: "Node classes ComfyUI lacks",
};

function uploadData(form, name) {
  const data = new FormData();
  const graph = form.elements.workflow.files[0];
  if (graph) data.append("workflow", graph, graph.name);
  const yaml = form.elements.yaml.files[0];
  if (yaml) data.append("yaml", yaml, yaml.name);
  const given = name || form.elements.name.value.trim();
  if (given) data.append("name", given);
  return data;
}

function showPreview(preview) {
  document.getElementById("preview-title").textContent = preview.title;
  document.getElementById("preview-name").textContent = preview.name;
  const rows = document.querySelector("#preview-options tbody");
  rows.replaceChildren();
  for (const option of preview.options) {
    const row = el("tr", { "data-option": option.name });
    row.append(el("td", {}, option.name + (option.required ? " *" : "")));
    row.append(el("td", {}, option.type));
    row.append(el("td", {}, option.sets.join(", ")));
    row.append(el("td", {}, option.range));
    const shown = option.default === null || option.default === undefined ? "" : option.default;
    row.append(el("td", {}, typeof shown === "object" ? JSON.stringify(shown) : String(shown)));
    rows.append(row);
  }
  const lists = document.getElementById("preview-lists");
  lists.replaceChildren();
  for (const [field, items] of Object.entries(preview)) {
    if (PREVIEW_FIELDS.has(field) || !Array.isArray(items) || items.length === 0) continue;
    const title = LIST_TITLES[field] || field.replaceAll("_", " ");
    lists.append(el("h3", {}, title));
    const list = el("ul", { "data-list": field });
    for (const item of items) list.append(el("li", {}, String(item)));
    lists.append(list);
  }
  if (!preview.checked) lists.append(el("p", { class: "muted" }, "Not checked against ComfyUI."));
  const save = document.getElementById("save-button");
  save.disabled = !preview.can_save;
  save.dataset.name = preview.name;
  if (!preview.can_save) {
    lists.append(el("p", { class: "error" }, "It can't be saved: " + preview.blocking.join("; ")));
  }
  document.getElementById("preview").hidden = false;
}

function initAdd() {
  const form = document.getElementById("upload-form");
  const save = document.getElementById("save-button");
  const preview = async () => {
    showError("");
    document.getElementById("preview").hidden = true;
    try {
      showPreview(await api("POST", "/v1/workflows?dry_run=true", uploadData(form)));
    } catch (error) {
      showError(error.message);
    }
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    preview();
  });
  form.elements.workflow.addEventListener("change", preview);
  save.addEventListener("click", async () => {
    showError("");
    save.disabled = true;
    try {
      const saved = await api("POST", "/v1/workflows", uploadData(form, save.dataset.name));
      window.location.assign("/workflows/" + encodeURIComponent(saved.name));
    } catch (error) {
      save.disabled = false;
      showError(error.message);
    }
  });
}

// running a workflow -----------------------------------------------------------------------------
function runData(form) {
  const data = new FormData();
  for (const input of form.elements) {
    if (!input.name) continue;
    if (input.type === "file") {
      if (input.files.length) data.append(input.name, input.files[0], input.files[0].name);
    } else if (input.type === "checkbox") {
      data.append(input.name, input.checked ? "true" : "false");
    } else if (input.value !== "") {
      data.append(input.name, input.value);
    }
  }
  return data;
}

function outputElement(jobId, output) {
  const src = `/v1/jobs/${encodeURIComponent(jobId)}/outputs/${output.index}`;
  if (output.kind === "image" || output.kind === "animation") {
    return el("img", { src, alt: output.filename, class: "output", "data-kind": output.kind });
  }
  if (output.kind === "video") {
    return el("video", { src, controls: "", muted: "", class: "output", "data-kind": "video" });
  }
  if (output.kind === "audio") {
    return el("audio", { src, controls: "", class: "output", "data-kind": "audio" });
  }
  const link = el("a", { href: src, class: "output", "data-kind": output.kind }, output.filename);
  if (output.kind === "text") {
    const text = el("pre", { class: "output", "data-kind": "text" });
    fetch(src, { credentials: "same-origin" })
      .then((r) => r.text())
      .then((t) => { text.textContent = t; });
    return text;
  }
  return link;
}

function follow(job) {
  const box = el("div", { class: "run", id: `run-${job.id}`, "data-state": job.state });
  const status = el("p", { class: "status" }, `Job ${job.id}: ${job.state}`);
  const bar = el("progress", { max: "1", value: "0" });
  const preview = el("img", { class: "preview-image", alt: "preview", hidden: "" });
  const results = el("div", { class: "results" });
  box.append(status, bar, preview, results);
  document.getElementById("runs").prepend(box);
  const events = new EventSource(`/v1/jobs/${encodeURIComponent(job.id)}/events?previews=true`);
  let finished = false;
  const on = (name, handle) => events.addEventListener(name, (message) => {
    const data = JSON.parse(message.data);
    box.dataset.state = data.job.state;
    handle(data);
  });
  on("queued", (data) => {
    status.textContent = `Job ${job.id}: queued` + (data.job.position ? `, ${data.job.position} ahead` : "");
  });
  on("position", (data) => { status.textContent = `Job ${job.id}: queued, ${data.job.position} ahead`; });
  on("progress", (data) => {
    const p = data.job.progress;
    if (!p) return;
    if (p.steps) {
      bar.value = p.step / p.steps;
      if (p.step > 0) box.dataset.progressed = "true";
    }
    const where = p.node ? ` (${p.node})` : "";
    status.textContent = `Job ${job.id}: running, step ${p.step} of ${p.steps}${where}`;
  });
  on("preview", (data) => {
    if (data.preview) {
      preview.src = data.preview;
      preview.hidden = false;
    }
  });
  on("done", (data) => {
    finished = true;
    events.close();
    bar.value = 1;
    preview.hidden = true;
    status.textContent = `Job ${job.id}: done`;
    for (const output of data.job.outputs) results.append(outputElement(job.id, output));
    box.dataset.state = "done";
  });
  on("failed", (data) => {
    finished = true;
    events.close();
    status.textContent = `Job ${job.id}: ${data.job.state}: ${data.job.error || ""}`;
    box.dataset.state = "failed";
  });
  events.addEventListener("error", () => {
    if (!finished && events.readyState === EventSource.CLOSED) {
      status.textContent = `Job ${job.id}: the live view stopped; see the gallery.`;
    }
  });
}

function initWorkflow() {
  const form = document.getElementById("run-form");
  const button = document.getElementById("run-button");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError("");
    button.disabled = true;
    try {
      const url = `/v1/workflows/${encodeURIComponent(form.dataset.workflow)}/jobs`;
      const created = await api("POST", url, runData(form));
      for (const job of created.jobs) follow(job);
    } catch (error) {
      showError(error.message);
    } finally {
      button.disabled = false;
    }
  });
  const remove = document.getElementById("delete-form");
  if (remove) {
    remove.addEventListener("submit", (event) => {
      if (!window.confirm("Remove this workflow and its files?")) event.preventDefault();
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "add") initAdd();
  if (page === "workflow") initWorkflow();
});
