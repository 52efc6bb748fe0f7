// The review page: plain JS, no framework, no CDN (field devices are offline).
"use strict";
const csrf = document.querySelector('meta[name="csrf-token"]').content;
let events = [];
let selected = 0;

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

async function loadEvents() {
  const query = new URLSearchParams(new FormData(document.getElementById("filters")));
  events = await getJSON("/api/events?" + query);
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
  select(Math.min(selected, events.length - 1));
  status(events.length + " detections");
}

function select(index) {
  const rows = document.querySelectorAll("#events tbody tr");
  if (!rows.length) return;
  selected = Math.max(0, Math.min(index, rows.length - 1));
  rows.forEach((r, i) => r.classList.toggle("selected", i === selected));
  rows[selected].scrollIntoView({ block: "nearest" });
}

async function judge(verdict, label) {
  const e = events[selected];
  if (!e) return;
  try {
    const v = await post("/api/verdicts", { event_id: e.id, verdict: verdict, label: label });
    e.verdict = v.verdict ? v : null;
    const td = document.querySelectorAll("#events tbody tr")[selected].querySelector(".verdict");
    td.textContent = verdictText(e.verdict);
    td.className = "verdict " + (e.verdict ? e.verdict.verdict : "");
    status("saved: " + (verdictText(e.verdict) || "undone"));
    select(selected + 1);
  } catch (err) { status("not saved: " + err.message); }
}

document.addEventListener("keydown", (ev) => {
  if (ev.target.closest("form") || location.hash.replace("#", "") !== "detections" && location.hash) return;
  const key = ev.key;
  if (key === "y") judge("right");
  else if (key === "n") judge("wrong");
  else if (key === "u") judge("none");
  else if (key === "r") {
    const label = prompt("relabel to:");
    if (label) judge("relabel", label);
  } else if (key === "j" || key === "ArrowDown") select(selected + 1);
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
  for (const label of [...labels].sort()) choice.add(new Option(label, label));
}

function show() {
  const page = location.hash.replace("#", "") || "detections";
  for (const s of document.querySelectorAll("section")) s.hidden = s.id !== page;
}

document.getElementById("filters").addEventListener("change", () => loadEvents().catch((e) => status(e.message)));
document.getElementById("export").addEventListener("click", async () => {
  try { status("exported " + (await post("/api/export", {})).written.length + " files"); }
  catch (err) { status("export failed: " + err.message); }
});
window.addEventListener("hashchange", show);
show();
Promise.all([loadModel(), loadEvents(), loadCoverage()]).catch((e) => status(e.message));
