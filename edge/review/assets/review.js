// The review page: plain JS, no framework, no CDN (field devices are offline).
"use strict";
const csrf = document.querySelector('meta[name="csrf-token"]').content;
let events = [];
let selected = 0;
let loaded = false;

function status(text) { document.getElementById("status").textContent = text; }

async function getJSON(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error((await r.json()).error || r.statusText);
  return r.json();
}

async function post(url, body) {
  const r = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(body),
  });
  const answer = await r.json();
  if (!r.ok) throw new Error(answer.error || r.statusText);
  return answer;
}

function cell(row, content) {
  const td = row.insertCell();
  if (content instanceof Node) td.appendChild(content); else td.textContent = content;
  return td;
}

function verdictText(v) {
  if (!v) return "";
  return v.verdict === "relabel" ? "relabel → " + v.label : v.verdict;
}

// The page shows at most the newest PAGE detections that match the filters.
const PAGE = 1000;

async function loadEvents() {
  const query = new URLSearchParams(new FormData(document.getElementById("filters")));
  query.set("limit", PAGE);
  const r = await fetch("/api/events?" + query);
  if (!r.ok) throw new Error((await r.json()).error || r.statusText);
  const found = await r.json();
  const total = Number(r.headers.get("X-Total-Count"));
  const ids = (list) => list.map((e) => e.id + (e.verdict ? e.verdict.at : "")).join();
  if (loaded && ids(found) === ids(events)) return; // nothing new: keep the page as it is
  const current = events[selected] && events[selected].id;
  events = found;
  loaded = true;
  addDays(await getJSON("/api/days"));
  const body = document.querySelector("#events tbody");
  body.replaceChildren();
  for (const e of events) {
    const row = body.insertRow();
    row.dataset.id = e.id;
    const img = document.createElement("img");
    img.className = "spec"; img.loading = "lazy"; img.alt = "spectrogram of " + e.label;
    img.src = "/media/" + e.id + ".png";
    const audio = document.createElement("audio");
    audio.controls = true; audio.preload = "metadata"; audio.src = "/media/" + e.id + ".wav";
    cell(row, img); cell(row, audio); cell(row, e.label);
    cell(row, e.start || e.key + " +" + e.start_offset.toFixed(2) + " s");
    cell(row, e.channel === null ? "" : String(e.channel));
    cell(row, Number(e.score_max).toFixed(2));
    const v = cell(row, verdictText(e.verdict));
    v.className = "verdict " + (e.verdict ? e.verdict.verdict : "");
    row.addEventListener("click", () => select(events.indexOf(e)));
  }
  const again = events.findIndex((e) => e.id === current);
  select(again >= 0 ? again : Math.min(selected, events.length - 1));
  status(total > events.length
    ? `the newest ${events.length} of ${total} detections (a day or label filter shows others)`
    : events.length + " detections");
}

function addDays(days) {
  const choice = document.querySelector('#filters select[name="day"]');
  const have = new Set([...choice.options].map((o) => o.value));
  for (const day of days) if (!have.has(day)) choice.add(new Option(day, day));
}

function select(index) {
  const rows = document.querySelectorAll("#events tbody tr");
  if (!rows.length) return;
  selected = Math.max(0, Math.min(index, rows.length - 1));
  rows.forEach((r, i) => r.classList.toggle("selected", i === selected));
  rows[selected].scrollIntoView({ block: "nearest" });
}

// The selection moves on at once, so keys typed faster than the server answers each judge
// the next event; the answer then marks the judged event's row, found by its id.
async function judge(verdict, label) {
  const e = events[selected];
  if (!e) return;
  select(selected + 1);
  try {
    const v = await post("/api/verdicts", { event_id: e.id, verdict: verdict, label: label });
    e.verdict = v.verdict ? v : null;
    const row = document.querySelector(`#events tbody tr[data-id="${e.id}"]`);
    const td = row && row.querySelector(".verdict");
    if (td) {
      td.textContent = verdictText(e.verdict);
      td.className = "verdict " + (e.verdict ? e.verdict.verdict : "");
    }
    status("saved: " + (verdictText(e.verdict) || "undone"));
  } catch (err) { status("not saved: " + err.message); }
}

const relabel = document.getElementById("relabel");

function askLabel() {
  if (!events[selected]) return;
  relabel.hidden = false;
  relabel.elements.label.value = "";
  relabel.elements.label.focus();
}

relabel.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const label = relabel.elements.label.value.trim();
  relabel.hidden = true;
  if (label) judge("relabel", label);
});
relabel.addEventListener("keydown", (ev) => {
  if (ev.key === "Escape") { relabel.hidden = true; ev.preventDefault(); }
});

function page() { return location.hash.replace("#", "") || "detections"; }

document.addEventListener("keydown", (ev) => {
  if (ev.target.closest("form") || page() !== "detections") return;
  const key = ev.key;
  if (key === "y") judge("right");
  else if (key === "n") judge("wrong");
  else if (key === "u") judge("none");
  else if (key === "r") askLabel();
  else if (key === "j" || key === "ArrowDown") select(selected + 1);
  else if (key === "k" || key === "ArrowUp") select(selected - 1);
  else if (key === "p") {
    const audio = document.querySelectorAll("#events tbody tr")[selected]?.querySelector("audio");
    if (audio) audio.paused ? audio.play() : audio.pause();
  } else return;
  ev.preventDefault();
});

async function loadCoverage() {
  const body = document.querySelector("#coverage tbody");
  body.replaceChildren();
  for (const h of await getJSON("/api/coverage")) {
    const gaps = Object.values(h.gaps).reduce((a, b) => a + b, 0);
    const total = h.analysed + h.edge + gaps || 1;
    const row = body.insertRow();
    cell(row, h.hour); cell(row, String(h.analysed)); cell(row, String(h.edge));
    cell(row, Object.entries(h.gaps).map(([why, s]) => why + ": " + s).join(", ") || "none");
    const bar = document.createElement("div");
    bar.className = "bar";
    for (const [kind, s] of [["analysed", h.analysed], ["edge", h.edge], ["gap", gaps]]) {
      const part = document.createElement("span");
      part.className = kind; part.style.width = (100 * s / total) + "%";
      bar.appendChild(part);
    }
    cell(row, bar);
  }
}

async function loadModel() {
  const body = document.querySelector("#model tbody");
  body.replaceChildren();
  const labels = new Set();
  for (const m of (await getJSON("/api/model")).models) {
    for (const [label, l] of Object.entries(m.labels)) {
      labels.add(label);
      const row = body.insertRow();
      cell(row, m.model); cell(row, label); cell(row, String(l.threshold)); cell(row, String(l.events));
    }
  }
  const choice = document.querySelector('#filters select[name="label"]');
  const known = document.getElementById("known-labels");
  for (const label of [...labels].sort()) {
    choice.add(new Option(label, label));
    known.appendChild(new Option(label, label));
  }
}

// A daemon with a shadow: section answers /api/shadow; elsewhere it is a 404 and stays hidden.
async function loadShadow() {
  const r = await fetch("/api/shadow");
  if (!r.ok) return;
  const shadow = await r.json();
  const counts = document.querySelector("#shadow-counts tbody");
  counts.replaceChildren();
  for (const [label, c] of Object.entries(shadow.counts)) {
    const row = counts.insertRow();
    cell(row, label); cell(row, String(c.both)); cell(row, String(c.deployed)); cell(row, String(c.shadow));
  }
  const events = document.querySelector("#shadow-events tbody");
  events.replaceChildren();
  for (const d of shadow.disagreements) {
    const row = events.insertRow();
    cell(row, d.start); cell(row, d.label); cell(row, d.only); cell(row, d.score.toFixed(3));
  }
  document.getElementById("shadow").hidden = false;
}

// -- Now (the daemon's page only: /api/now answers 404 elsewhere) ----------------------------

function fill(table, rows) {
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const [name, value] of rows) {
    const row = body.insertRow();
    cell(row, name); cell(row, value === null ? "–" : Number(value).toFixed(2));
  }
}

function drawTimeline(now) {
  const line = document.getElementById("timeline");
  line.replaceChildren();
  for (const [from, to, what] of now.segments) {
    const part = document.createElement("span");
    const kind = what.startsWith("gap:") ? "gap " + what.replace(":", "-").replace(/ /g, "-") : what;
    part.className = kind;
    part.dataset.status = what;
    part.style.left = (100 * from / now.seconds) + "%";
    part.style.width = (100 * (to - from) / now.seconds) + "%";
    part.title = what + ": " + (to - from) + " s";
    line.appendChild(part);
  }
  const canvas = document.getElementById("peak");
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  g.fillStyle = "#36c";
  const w = canvas.width / now.peak.length;
  now.peak.forEach((p, i) => {
    if (p !== null) g.fillRect(i * w, canvas.height * (1 - p), Math.max(w, 1), canvas.height * p);
  });
  document.getElementById("t-start").textContent = now.start;
  document.getElementById("t-end").textContent = now.end;
  document.getElementById("legend").textContent = Object.entries(now.totals)
    .map(([what, s]) => what + " " + s + " s").join(" · ");
}

function describe(s) {
  const parts = [s.model + " " + s.model_version, "up " + Math.round(s.uptime_seconds) + " s",
    "listening to " + (s.source || "nothing yet"), "lag " + s.lag_seconds.toFixed(1) + " s"];
  if (s.device_connected === false) parts.push("input device lost");
  parts.push(s.mqtt === null ? "MQTT off" : (s.mqtt.connected ? "MQTT connected" : "MQTT disconnected")
    + ", outbox " + (s.mqtt.outbox_pending ?? "?"));
  if (s.output_failing) parts.push("output files failing");
  for (const d of s.down) parts.push(d + " down");
  return parts.join(" · ");
}

async function loadNow() {
  const [now, daemon] = await Promise.all([getJSON("/api/now"), getJSON("/api/status")]);
  document.getElementById("daemon").textContent = describe(daemon);
  const top = document.getElementById("top");
  top.replaceChildren(...now.top.map(([label, p]) => {
    const li = document.createElement("li");
    li.textContent = label + " " + p.toFixed(2);
    return li;
  }));
  fill(document.getElementById("scores"), Object.entries(now.scores));
  fill(document.getElementById("levels"), Object.entries(now.levels || {}));
  drawTimeline(now);
}

let hasNow = false;

function show() {
  for (const s of document.querySelectorAll("section")) s.hidden = s.id !== page();
  if (page() === "now" && hasNow) loadNow().catch((e) => status(e.message));
}

// The page keeps itself current: the daemon's new detections and the Now page, polled.
setInterval(() => {
  if (document.hidden) return;
  if (page() === "now" && hasNow) loadNow().catch((e) => status(e.message));
  else if (page() === "detections" && relabel.hidden) loadEvents().catch((e) => status(e.message));
}, 2000);
getJSON("/api/status").then(() => {
  hasNow = true;
  document.getElementById("tab-now").hidden = false;
  show();
}, () => {});

document.getElementById("filters").addEventListener("change", () => {
  loaded = false;
  loadEvents().catch((e) => status(e.message));
});
document.getElementById("export").addEventListener("click", async () => {
  try { status("exported " + (await post("/api/export", {})).written.length + " files"); }
  catch (err) { status("export failed: " + err.message); }
});
window.addEventListener("hashchange", show);
show();
Promise.all([loadModel(), loadShadow(), loadEvents(), loadCoverage()]).catch((e) => status(e.message));
