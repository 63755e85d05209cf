// castkeep's web page: plain JavaScript against the server's /api (no build step, nothing loaded from elsewhere).
// Every string from the store goes through textContent, never innerHTML.
"use strict";

const $ = (selector) => document.querySelector(selector);
const SCORERS = ["arcface", "dlib", "fused"];
const thumbnails = new Map(); // character name -> crop URL, for the match table
let current = null; // the character shown in the detail panel

function element(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

function say(text, isError = false) {
  const box = $("#message");
  box.textContent = text;
  box.className = isError ? "error" : "";
  box.hidden = !text;
}

// One API call: JSON in and out; a refusal's {"error": {...}} becomes an Error with its message. A read refused
// for want of the token (a server started with --token-reads) signs in once and is asked again.
async function api(path, { method = "GET", body = null, retried = false } = {}) {
  const headers = {};
  const token = $("#token").value.trim();
  if (token && method !== "GET") headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { method, body, headers });
  const data = await response.json().catch(() => null);
  if (response.status === 401 && method === "GET" && !retried) {
    if (await signIn()) return api(path, { method, body, retried: true });
    locked = true;
    $("#token-field").hidden = false;
    $("#token").focus();
    throw new Error(token ? "That token is not this server's: enter it again above."
      : "This server needs its token to show anything: enter it above.");
  }
  if (!response.ok) {
    throw new Error(data && data.error ? `${data.error.message} (${data.error.type})` : `HTTP ${response.status}`);
  }
  return data;
}

// The sign-in of a server whose reads need the token: the token, typed once (kept for this tab), is traded for
// an HttpOnly session cookie that the page's images, run files and event streams load with. One at a time.
let signingIn = null;
let locked = false; // a read was refused for want of the token: entering it loads the page again
function signIn() {
  const token = $("#token").value.trim();
  if (!token) return Promise.resolve(false);
  if (!signingIn) {
    const form = new FormData();
    form.append("token", token);
    signingIn = fetch("/api/session", { method: "POST", body: form })
      .then((response) => response.ok, () => false)
      .finally(() => { signingIn = null; });
  }
  return signingIn;
}

const percent = (p) => `${(100 * p).toFixed(p > 0.995 || p < 0.005 ? 1 : 0)} %`;

async function loadStatus() {
  const status = await api("/api/status");
  $("#status").textContent = `${status.characters} character(s) · models ${status.models.split(":")[0]} · v${status.version}`
    + (status.read_only ? " · read-only store" : "");
  $("#token-field").hidden = !status.writes_need_token;
  $("#token").placeholder = status.reads_need_token ? "needed to use this server" : "needed to change the store";
}

async function loadGallery() {
  const characters = await api("/api/characters");
  const gallery = $("#gallery");
  const against = $("#against");
  const chosen = against.value;
  gallery.replaceChildren();
  against.replaceChildren(element("option", { value: "", textContent: "every character (identify)" }));
  thumbnails.clear();
  for (const character of characters) {
    thumbnails.set(character.name, character.thumbnail_url);
    const card = element("li", { title: character.description || character.name },
      character.thumbnail_url ? element("img", { src: character.thumbnail_url, alt: character.name }) : null,
      element("div", { className: "name", textContent: character.name }),
      element("div", { className: "small", textContent: `${character.references} reference(s)`
        + (character.tags.length ? ` · ${character.tags.join(", ")}` : "") }));
    card.dataset.name = character.name;
    if (current === character.name) card.classList.add("selected");
    card.addEventListener("click", () => showCharacter(character.name).catch((e) => say(e.message, true)));
    gallery.append(card);
    against.append(element("option", { value: character.name, textContent: character.name }));
  }
  against.value = characters.some((c) => c.name === chosen) ? chosen : "";
  $("#gallery-empty").hidden = characters.length > 0;
}

async function showCharacter(name) {
  const character = await api(`/api/characters/${encodeURIComponent(name)}`);
  current = character.name;
  for (const card of document.querySelectorAll("#gallery li")) card.classList.toggle("selected", card.dataset.name === current);
  $("#detail").hidden = false;
  $("#detail-name").textContent = character.name;
  const baseline = character.baseline && character.baseline.mean != null ? ` · baseline cosine ${character.baseline.mean.toFixed(2)}` : "";
  $("#detail-meta").textContent = `${character.references} reference(s)${baseline}`
    + (character.description ? ` · ${character.description}` : "") + (character.tags.length ? ` · ${character.tags.join(", ")}` : "");
  $("#coverage").replaceChildren(...Object.entries(character.pose_coverage.bins).map(([label, count]) =>
    element("span", { className: count ? "covered" : "", textContent: `${label} ${count}` })));
  $("#references").replaceChildren(...character.reference_details.map((reference) => {
    const yaw = reference.pose && reference.pose.yaw != null ? `yaw ${Math.round(reference.pose.yaw)}°` : "yaw ?";
    return element("li", {},
      reference.crop_url ? element("img", { src: reference.crop_url, alt: reference.source_path,
        className: reference.flagged ? "flagged" : "" }) : null,
      element("div", { className: "small", textContent: `quality ${reference.quality.toFixed(2)} · ${yaw}` }),
      element("div", { className: "small", textContent: reference.source_path.split("/").pop() }));
  }));
  $("#export-link").href = character.export_url;
}

function scoreCell(scores, scorer) {
  const result = scores[scorer];
  return element("td", { textContent: result ? percent(result.probability) : "–",
    title: result ? `${result.metric} ${result.score.toFixed(3)} (threshold ${result.threshold.toFixed(3)}, ${result.domain})` : "" });
}

function matchRow(match, rank) {
  const thumbnail = thumbnails.get(match.name);
  return element("tr", {},
    element("td", {}, thumbnail ? element("img", { src: thumbnail, alt: "" }) : null),
    element("td", { className: "match-name", textContent: rank ? `${rank}. ${match.name}` : match.name }),
    ...SCORERS.map((scorer) => scoreCell(match.scores, scorer)),
    element("td", { className: match.same ? "same" : "different", textContent: match.same ? "same person" : "different" }));
}

async function judge(file) {
  if (!file) return;
  const form = new FormData();
  form.append("image", file);
  form.append("scorer", $("#scorer").value);
  form.append("domain", $("#domain").value);
  const against = $("#against").value;
  if (against) form.append("character", against);
  say("");
  $("#result-summary").textContent = "judging…";
  $("#result").hidden = false;
  $("#probe-preview").src = URL.createObjectURL(file);
  const rows = $("#result-table tbody");
  rows.replaceChildren();
  try {
    const answer = await api(against ? "/api/score" : "/api/identify", { method: "POST", body: form });
    const matches = against ? [answer] : answer.matches;
    rows.replaceChildren(...matches.map((match, i) => matchRow(match, against ? 0 : i + 1)));
    const best = matches[0];
    $("#result-summary").textContent = !best ? "No characters stored yet."
      : `${best.same ? "Best match" : "Closest, but not a match"}: ${best.name} — P(same) ${percent(best.probability)} by ${best.scorer}, `
        + `${answer.domain} calibration` + (answer.leakage ? ` · leakage: ${answer.closest_other.name} is more likely` : "");
    $("#result").dataset.best = best ? best.name : "";
  } catch (error) {
    $("#result-summary").textContent = "";
    say(error.message, true);
  }
}

async function register(event) {
  event.preventDefault();
  const files = $("#register-input").files;
  const form = new FormData();
  form.append("name", $("#register-name").value.trim());
  form.append("description", $("#register-description").value.trim());
  for (const tag of $("#register-tags").value.split(",").map((t) => t.trim()).filter(Boolean)) form.append("tags", tag);
  for (const file of files) form.append("photos", file);
  const button = $("#register-form button");
  button.disabled = true;
  try {
    const character = await api("/api/characters", { method: "POST", body: form });
    say(`Registered ${character.name} from ${character.references} photo(s).` + warnings(character));
    $("#register-form").reset();
    $("#register-files").textContent = "Drop 1–13 photos of one person here, or click to choose them";
    await refresh();
    await showCharacter(character.name);
  } catch (error) {
    say(error.message, true);
  } finally {
    button.disabled = false;
  }
}

const warnings = (character) => (character.warnings && character.warnings.length ? ` Warnings: ${character.warnings.join("; ")}` : "");

async function addReferences(files) {
  if (!current || !files.length) return;
  const form = new FormData();
  for (const file of files) form.append("photos", file);
  try {
    const character = await api(`/api/characters/${encodeURIComponent(current)}/references`, { method: "POST", body: form });
    say(`${character.name} now has ${character.references} reference(s).` + warnings(character));
    await refresh();
    await showCharacter(character.name);
  } catch (error) {
    say(error.message, true);
  }
}

async function removeCurrent() {
  if (!current || !window.confirm(`Remove ${current} and its references from the store?`)) return;
  try {
    await api(`/api/characters/${encodeURIComponent(current)}`, { method: "DELETE" });
    say(`Removed ${current}.`);
    current = null;
    $("#detail").hidden = true;
    await refresh();
  } catch (error) {
    say(error.message, true);
  }
}

// A drop zone hands its files to its file input, so dropping and choosing take one path.
function dropZone(zone, input, onFiles) {
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    input.files = event.dataTransfer.files;
    onFiles(input.files);
  });
  input.addEventListener("change", () => onFiles(input.files));
}

async function refresh() {
  await Promise.all([loadStatus(), loadGallery()]);
}

document.addEventListener("DOMContentLoaded", () => {
  const token = $("#token");
  token.value = sessionStorage.getItem("castkeep-token") || "";
  token.addEventListener("change", () => {
    sessionStorage.setItem("castkeep-token", token.value.trim());
    if (locked) {  // the page waited for the token: load everything now
      locked = false;
      say("");
      refresh().then(() => loadRuns()).catch((error) => say(error.message, true));
    }
  });
  dropZone($("#probe-drop"), $("#probe-input"), (files) => judge(files[0]));
  dropZone($("#register-drop"), $("#register-input"), (files) => {
    $("#register-files").textContent = files.length ? Array.from(files, (f) => f.name).join(", ") : "";
  });
  $("#add-input").addEventListener("change", (event) => addReferences(event.target.files));
  $("#register-form").addEventListener("submit", register);
  $("#remove-button").addEventListener("click", removeCurrent);
  refresh().catch((error) => say(error.message, true));
});
