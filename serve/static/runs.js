// The Runs view: generation/storyboard jobs with live progress (EventSource on /api/jobs/ID/events), each
// finished run's contact sheet, every output's ArcFace/dlib/fused verdicts and the storyboard report.
// Uses app.js's $, element, say and api. Strings from the server go through textContent only.
"use strict";

const streams = new Map(); // job id -> EventSource, while the job runs

function progressText(job) {
  const p = job.progress;
  if (!p) return job.state;
  const unit = p.type === "shot" ? `shot ${p.shot} of ${p.of} (${p.id}: ${p.outcome})` : `attempt ${p.attempt} of ${p.of}`;
  return `${job.state} · ${unit}`;
}

function verdictCell(verdict) {
  if (!verdict) return element("td", { className: "different", textContent: "—" });
  const shown = verdict.probability !== null && verdict.probability !== undefined ? percent(verdict.probability)
    : String(verdict.score);
  return element("td", { className: verdict.same ? "same" : "different", textContent: shown });
}

function outputsTable(outputs) {
  const body = element("tbody");
  for (const output of outputs) {
    const link = element("a", { href: output.file, target: "_blank" }, element("img", { src: output.file, alt: `output ${output.rank}` }));
    body.append(element("tr", {}, element("td", {}, link), element("td", { textContent: `#${output.rank} seed ${output.seed}` }),
      ...SCORERS.map((name) => verdictCell(output.verdicts[name])),
      element("td", { textContent: output.face_found ? "" : "no face" })));
  }
  const head = element("thead", {}, element("tr", {}, ...["", "output", "ArcFace", "dlib", "fused", ""].map((t) => element("th", { textContent: t }))));
  return element("table", {}, head, body);
}

function runCard(entry) {
  const results = entry.results || entry;
  const card = element("li", { className: "run" });
  card.append(element("div", { className: "name", textContent: `${entry.kind || results.kind || "run"} · ${entry.run}` }));
  card.append(element("p", { className: "small", textContent: entry.error ? `${progressText(entry)}: ${entry.error}` : progressText(entry) }));
  if (entry.id && (entry.state === "queued" || entry.state === "running")) {
    const cancel = element("button", { type: "button", className: "danger", textContent: "cancel" });
    cancel.addEventListener("click", () => api(`/api/jobs/${entry.id}/cancel`, { method: "POST" }).catch((e) => say(e.message, true)));
    card.append(cancel);
  }
  if (results.contact_sheet) card.append(element("a", { href: results.contact_sheet, target: "_blank" }, element("img", { className: "sheet", src: results.contact_sheet, alt: "contact sheet" })));
  if (results.outputs) card.append(outputsTable(results.outputs));
  if (results.report) card.append(element("a", { className: "button", href: results.report, target: "_blank", textContent: "storyboard report" }));
  if (results.counts) card.append(element("p", { className: "small", textContent: `${results.counts.done} done, ${results.counts.failed_target} below target, ${results.counts.error} errors of ${results.counts.shots} shots` }));
  return card;
}

function follow(job) {
  if (streams.has(job.id) || job.state === "done" || job.state === "failed" || job.state === "cancelled") return;
  const source = new EventSource(job.events_url);
  streams.set(job.id, source);
  const update = (event) => {
    const data = JSON.parse(event.data);
    if (data.final) { source.close(); streams.delete(job.id); loadRuns().catch((e) => say(e.message, true)); return; }
    if (data.type === "attempt" || data.type === "shot") job.progress = data;
    if (data.type === "state") job.state = data.state;
    const card = document.querySelector(`[data-job="${CSS.escape(job.id)}"]`);
    if (card) {
      const fresh = runCard(job);
      fresh.dataset.job = job.id;
      card.replaceWith(fresh);
    }
  };
  for (const type of ["snapshot", "state", "attempt", "shot"]) source.addEventListener(type, update);
  source.onerror = () => { source.close(); streams.delete(job.id); };
}

async function loadRuns() {
  const [jobs, runs] = await Promise.all([api("/api/jobs"), api("/api/runs")]);
  const byRun = new Map(jobs.map((job) => [job.run, job]));
  const list = $("#run-list");
  list.replaceChildren();
  for (const job of jobs) {
    const card = runCard(job);
    card.dataset.job = job.id;
    list.append(card);
    follow(job);
  }
  for (const run of runs) if (!byRun.has(run.run)) list.append(runCard(run));
  $("#runs-empty").hidden = list.children.length > 0;
}

async function submitGenerate(event) {
  event.preventDefault();
  const number = (id) => ($(id).value === "" ? null : Number($(id).value));
  const text = (id) => ($(id).value.trim() || null);
  const body = { character: $("#generate-character").value.trim(), prompt: $("#generate-prompt").value.trim(),
    n: number("#generate-n"), best_of: number("#generate-best-of"), min_score: number("#generate-min-score"),
    seed: number("#generate-seed"), steps: number("#generate-steps"), base_model: text("#generate-base"),
    ip_adapter: text("#generate-adapter") };
  const headers = { "Content-Type": "application/json" };
  const token = $("#token").value.trim();
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch("/api/jobs/generate", { method: "POST", headers, body: JSON.stringify(body) });
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new Error(data && data.error ? `${data.error.message} (${data.error.type})` : `HTTP ${response.status}`);
  say(`queued ${data.id}`);
  await loadRuns();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#generate-form").addEventListener("submit", (event) => submitGenerate(event).catch((e) => say(e.message, true)));
  loadRuns().catch((error) => say(error.message, true));
});
