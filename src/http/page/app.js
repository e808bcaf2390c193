// farsight's page: plain JavaScript over the JSON API (README "HTTP API"), no framework, no build
// step. Every value from the server reaches the page through textContent or attributes, never as
// HTML. When the server asks for a token (401), the token bar takes it; it is kept in this
// browser's localStorage and sent as `Authorization: Bearer` with every request (EventSource and
// <img> cannot send that header, so the event stream and pictures are fetched by hand).
"use strict";

const TOKEN_KEY = "farsight-token";
const $ = (id) => document.getElementById(id);

// ---- small helpers ----------------------------------------------------------------------------

/** Makes an element: h("div", {class: "x", onclick: f}, child, "text", ...). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function say(id, text, kind) {
  const el = $(id);
  el.textContent = text || "";
  el.className = "status" + (kind ? " " + kind : "");
}

function token() {
  try { return localStorage.getItem(TOKEN_KEY) || ""; } catch (_) { return ""; }
}

function authHeaders(extra) {
  const headers = Object.assign({}, extra || {});
  const t = token();
  if (t) headers["Authorization"] = "Bearer " + t;
  return headers;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

/** Calls the API; resolves to the JSON body, rejects with ApiError (status, the server's message). */
async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = authHeaders(opts.headers);
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    throw new ApiError(0, "farsight does not answer (" + e.message + ")");
  }
  let body = null;
  try { body = await res.json(); } catch (_) { body = null; }
  if (res.status === 401) needToken(body && body.error);
  if (!res.ok) throw new ApiError(res.status, (body && body.error) || res.status + " " + res.statusText);
  return body;
}

function json(method, body) {
  return { method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
}

/** Points an <img> at an API picture (through fetch when a token must be sent). */
async function showPicture(img, url) {
  if (!token()) { img.src = url; return; }
  try {
    const res = await fetch(url, { headers: authHeaders() });
    if (!res.ok) throw new Error(res.status);
    img.src = URL.createObjectURL(await res.blob());
    img.addEventListener("load", () => URL.revokeObjectURL(img.src), { once: true });
  } catch (_) {
    img.replaceWith(h("div", { class: "initials", text: "?" }));
  }
}

function initials(name) {
  const parts = String(name).trim().split(/\s+/).filter(Boolean);
  const letters = parts.length > 1 ? [parts[0], parts[parts.length - 1]] : parts;
  return letters.map((p) => Array.from(p)[0].toUpperCase()).join("") || "?";
}

function face(url, name) {
  if (!url) return h("div", { class: "initials", title: "no picture kept", text: initials(name) });
  const img = h("img", { class: "face", alt: name });
  // A crop retention already deleted shows the initials instead of a broken picture.
  img.addEventListener("error", () => img.replaceWith(h("div", { class: "initials", text: initials(name) })),
    { once: true });
  showPicture(img, url);
  return img;
}

function plural(n, what) { return n + " " + what + (n === 1 ? "" : "s"); }

/** A time given as Unix milliseconds (events) or as a date string. */
function when(t) {
  if (t === undefined || t === null || t === "") return "";
  const d = new Date(/^\d+$/.test(String(t)) ? Number(t) : t);
  return isNaN(d) ? String(t) : d.toLocaleString();
}

/** A button that asks for a second click before it acts (no modal dialog). */
function confirmButton(label, confirmLabel, act) {
  let armed = false;
  const b = h("button", { type: "button", class: "danger", text: label });
  b.addEventListener("click", async () => {
    if (!armed) {
      armed = true; b.textContent = confirmLabel; b.classList.add("armed");
      setTimeout(() => { armed = false; b.textContent = label; b.classList.remove("armed"); }, 4000);
      return;
    }
    b.disabled = true;
    try { await act(); } finally { b.disabled = false; }
  });
  return b;
}

// ---- token --------------------------------------------------------------------------------------

function needToken(message) {
  $("token-bar").hidden = false;
  say("token-status", token() ? "that token was refused: " + (message || "") : "", token() ? "error" : "");
}

function setupToken() {
  $("token-bar").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("token-input").value.trim();
    if (!t) return;
    try { localStorage.setItem(TOKEN_KEY, t); } catch (_) { /* private mode: kept for this page only */ }
    $("token-input").value = "";
    $("token-bar").hidden = true;
    restartStream();
    show(current);
  });
  $("token-forget").addEventListener("click", () => {
    try { localStorage.removeItem(TOKEN_KEY); } catch (_) { /* nothing kept */ }
    say("token-status", "forgotten");
  });
}

// ---- gallery --------------------------------------------------------------------------------------

async function loadGallery() {
  let body;
  try {
    body = await api("/api/identities");
  } catch (e) {
    say("gallery-status", e.message, "error");
    return;
  }
  const list = $("identities");
  list.replaceChildren();
  const ids = body.identities || [];
  say("gallery-status", ids.length ? ids.length + " enrolled" : "Nobody enrolled yet: add photos above.");
  for (const who of ids) list.append(identityCard(who));
}

function identityCard(who) {
  const card = h("div", { class: "card identity", "data-name": who.name });
  const renameInput = h("input", { type: "text", value: who.name, "aria-label": "new name", maxlength: 200 });
  const renameForm = h("form", { class: "actions", hidden: true },
    renameInput, h("button", { type: "submit", text: "Save" }),
    h("button", { type: "button", class: "quiet", text: "Cancel", onclick: () => { renameForm.hidden = true; } }));
  renameForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const to = renameInput.value.trim();
    if (!to || to === who.name) { renameForm.hidden = true; return; }
    try {
      await api("/api/identities/" + encodeURIComponent(who.name), json("PATCH", { name: to }));
      await loadGallery();
      say("gallery-status", "renamed " + who.name + " to " + to, "ok");
    } catch (e) { say("gallery-status", e.message, "error"); }
  });
  card.append(
    h("div", { class: "who" }, face(who.thumbnail, who.name),
      h("div", {}, h("div", { class: "name", text: who.name }),
        h("div", { class: "meta", text: plural(who.templates, "photo") }))),
    h("div", { class: "actions" },
      h("button", { type: "button", class: "quiet", text: "Add photos", onclick: () => {
        $("enroll-name").value = who.name; $("enroll-files").focus();
      } }),
      h("button", { type: "button", class: "quiet rename", text: "Rename", onclick: () => {
        renameForm.hidden = false; renameInput.focus();
      } }),
      confirmButton("Remove", "Remove " + who.name + "?", async () => {
        try {
          await api("/api/identities/" + encodeURIComponent(who.name), { method: "DELETE" });
          await loadGallery();
          say("gallery-status", "removed " + who.name, "ok");
        } catch (e) { say("gallery-status", e.message, "error"); }
      })),
    renameForm);
  return card;
}

function setupGallery() {
  $("enroll-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const name = $("enroll-name").value.trim();
    const files = $("enroll-files").files;
    if (!name || !files.length) return;
    const form = new FormData();
    for (const f of files) form.append("photo", f, f.name);
    const largest = $("enroll-largest").checked ? "?largest=true" : "";
    $("enroll-submit").disabled = true;
    say("enroll-status", "enrolling " + files.length + " photo(s)...");
    try {
      const r = await api("/api/identities/" + encodeURIComponent(name) + "/photos" + largest,
        { method: "POST", body: form });
      say("enroll-status", (r.created ? "enrolled " : "added to ") + name + ": " + r.added + " photo(s)", "ok");
      $("enroll-form").reset();
      loadGallery();
    } catch (e) {
      say("enroll-status", e.message, "error");
    } finally {
      $("enroll-submit").disabled = false;
    }
  });
}

// ---- events ----------------------------------------------------------------------------------------

const events = new Map(); // visit key -> event (newest state of each visit)
const MAX_EVENTS = 200;
let stream = null;

function visitKey(e) { return e.camera + "/" + e.track + "/" + e.first_seen_ms; }

function cropUrl(e) {
  const shot = e.best_shot || {};
  return shot.crop_url || null;
}

function eventCard(e, fresh) {
  const matched = e.event === "match";
  const title = matched ? e.identity : "unknown";
  const shot = e.best_shot || {};
  const score = typeof e.score === "number" ? " · score " + e.score.toFixed(2) : "";
  const restored = shot.restored ? " · restored (" + (shot.restorer || "yes") + ")" : "";
  const px = typeof shot.face_px === "number" ? " · " + Math.round(shot.face_px) + " px face" : "";
  // Unknowns carry their visitor (README "Visitors"): its id and how many visits it has made.
  const visits = typeof e.visitor_visits === "number" ? " · " + plural(e.visitor_visits, "visit") : "";
  const visitor = e.visitor ? h("span", { class: "badge visitor", text: "visitor " + e.visitor + visits }) : null;
  return h("div", { class: "card event" + (fresh ? " fresh" : ""), "data-key": visitKey(e),
    "data-identity": e.identity, "data-kind": e.event, "data-live": e._live ? "true" : null },
    face(cropUrl(e), title),
    h("div", { class: "body" },
      h("div", { class: "title" }, title + " ", h("span", { class: "badge " + e.event, text: e.event }), " ",
        h("span", { class: "badge", text: e.phase }), " ", visitor),
      h("div", { class: "meta", text: "camera " + e.camera + " · " + when(e.last_seen_ms) }),
      h("div", { class: "meta", text: plural(e.frames_seen || 0, "frame") + px + score + restored })));
}

function renderEvents() {
  const kind = $("events-kind").value;
  const camera = $("events-camera").value;
  const list = $("events");
  const shown = [...events.values()]
    .filter((e) => (!kind || e.event === kind) && (!camera || e.camera === camera))
    .sort((a, b) => b.last_seen_ms - a.last_seen_ms);
  list.replaceChildren(...shown.map((e) => eventCard(e, e._fresh)));
  shown.forEach((e) => { e._fresh = false; });
  const cams = new Set([...events.values()].map((e) => e.camera));
  const select = $("events-camera");
  for (const c of cams) {
    if (![...select.options].some((o) => o.value === c)) select.append(h("option", { value: c, text: c }));
  }
  if (!shown.length) say("events-status", "No events yet: they appear here as people pass a camera.");
  else if ($("events-status").textContent.startsWith("No events")) say("events-status", "");
}

function addEvent(e, fresh) {
  const key = visitKey(e);
  const old = events.get(key);
  // A visit's later events replace its earlier ones (decision, update, then final).
  if (old && old.last_seen_ms > e.last_seen_ms) return;
  e._fresh = fresh;
  e._live = fresh || (old && old._live);
  events.delete(key);
  events.set(key, e);
  while (events.size > MAX_EVENTS) events.delete(events.keys().next().value);
}

async function loadEvents() {
  try {
    const body = await api("/api/events?limit=100");
    for (const e of (body.events || []).reverse()) addEvent(e, false);
  } catch (e) {
    if (e.status === 404) say("events-status", e.message + " — live events are still shown as they happen.");
    else say("events-status", e.message, "error");
  }
  renderEvents();
}

function liveBadge(text, kind) {
  const b = $("events-live");
  b.textContent = text;
  b.className = "badge " + (kind || "");
}

/** Reads the SSE stream with fetch (so the token can be sent); reconnects after a pause. */
async function startStream() {
  const ctl = new AbortController();
  stream = ctl;
  liveBadge("connecting");
  try {
    const res = await fetch("/api/events/stream", { headers: authHeaders(), signal: ctl.signal });
    if (res.status === 401) { needToken(); liveBadge("no token", "down"); stream = null; return; }
    if (!res.ok || !res.body) throw new Error(res.status);
    liveBadge("live", "live");
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut).replace(/^\r?\n\r?\n/, "");
        onMessage(block);
      }
    }
  } catch (e) {
    if (ctl.signal.aborted) return;
  }
  if (stream !== ctl) return;
  liveBadge("reconnecting", "down");
  setTimeout(() => { if (stream === ctl) startStream(); }, 3000);
}

function restartStream() {
  if (stream) stream.abort();
  stream = null;
  startStream();
}

function onMessage(block) {
  let kind = "message";
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (line.startsWith("event:")) kind = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (kind === "event" && data.length) {
    try {
      addEvent(JSON.parse(data.join("\n")), true);
      renderEvents();
    } catch (_) { /* not an event */ }
  } else if (kind === "lagged") {
    say("events-status", data.join("") + " events were missed (the page fell behind); reload for all.");
  }
}

// ---- visitors ---------------------------------------------------------------------------------------

// GET /api/visitors: {"visitors": [{id: "v2", first_seen_ms, last_seen_ms, visits, cameras: [{camera,
// visits, last_seen_ms}], ignored, suppressed, embeddings, best_shot_url (null without crops)}]}.
let visitorsList = [];

async function loadVisitors() {
  let body;
  try {
    body = await api("/api/visitors");
  } catch (e) {
    $("visitors").replaceChildren();
    say("visitors-status", e.message, "error");
    return;
  }
  visitorsList = body.visitors || [];
  $("visitors").replaceChildren(...visitorsList.map(visitorCard));
  say("visitors-status", visitorsList.length ? plural(visitorsList.length, "visitor") + " to review"
    : "No visitors yet: strangers appear here once they have been seen.");
}

function visitorCard(v) {
  const id = String(v.id);
  const label = "visitor " + id;
  const path = "/api/visitors/" + encodeURIComponent(id);
  const act = async (suffix, options, done) => {
    try {
      const r = await api(path + suffix, options);
      await loadVisitors();
      say("visitors-status", done(r), "ok");
      if (suffix === "/name") loadGallery();
    } catch (e) { say("visitors-status", label + ": " + e.message, "error"); }
  };
  const nameInput = h("input", { type: "text", placeholder: "name", "aria-label": "name for " + label, maxlength: 200 });
  const nameForm = h("form", { class: "actions name-form" }, nameInput, h("button", { type: "submit", text: "Name" }));
  nameForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const name = nameInput.value.trim();
    if (name) {
      act("/name", json("POST", { name }), (r) => label + " enrolled as " + r.name + " (" +
        plural(r.templates, "template") + (r.created ? ", new identity)" : ", added to the identity)"));
    }
  });
  const others = visitorsList.filter((o) => String(o.id) !== id);
  const into = h("select", { "aria-label": "merge " + label + " into" },
    h("option", { value: "", text: "merge into..." }),
    others.map((o) => h("option", { value: String(o.id), text: "visitor " + o.id })));
  const mergeForm = h("form", { class: "actions merge-form" }, into,
    h("button", { type: "submit", class: "quiet", text: "Merge" }));
  mergeForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (into.value) act("/merge", json("POST", { into: into.value }), () => label + " merged into visitor " + into.value);
  });
  const cameras = (v.cameras || []).map((c) => c.camera + " (" + plural(c.visits, "visit") + ")").join(", ");
  const ignoreButton = v.ignored
    ? h("button", { type: "button", class: "quiet ignore", text: "Unignore",
      onclick: () => act("/ignore", json("POST", { ignored: false }), () => label + ": its events are sent again") })
    : h("button", { type: "button", class: "quiet ignore", text: "Ignore",
      onclick: () => act("/ignore", { method: "POST" }, () => label + " ignored: its events are counted, not sent") });
  return h("div", { class: "card visitor", "data-visitor": id, "data-ignored": v.ignored ? "true" : null },
    h("div", { class: "who" }, face(v.best_shot_url, "?"),
      h("div", {},
        h("div", { class: "name" }, label + " ",
          v.ignored ? h("span", { class: "badge ignored", text: "ignored" }) : null),
        h("div", { class: "meta", text: plural(v.visits || 0, "visit") + (cameras ? " · " + cameras : "") }),
        h("div", { class: "meta", text: plural(v.embeddings || 0, "face") + " kept" +
          (v.suppressed ? " · " + plural(v.suppressed, "event") + " suppressed" : "") }),
        h("div", { class: "meta", text: "first " + when(v.first_seen_ms) }),
        h("div", { class: "meta", text: "last " + when(v.last_seen_ms) }))),
    nameForm,
    others.length ? mergeForm : null,
    h("div", { class: "actions" },
      ignoreButton,
      confirmButton("Forget", "Forget " + label + "?", () => act("", { method: "DELETE" },
        (r) => label + " forgotten (" + plural(r.events, "event") + ", " + plural(r.crops, "crop") + " deleted)"))));
}

// ---- identify ---------------------------------------------------------------------------------------

function setupIdentify() {
  $("identify-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const file = $("identify-file").files[0];
    if (!file) return;
    const form = new FormData();
    form.append("photo", file, file.name);
    $("identify-submit").disabled = true;
    say("identify-status", "looking for faces...");
    try {
      const r = await api("/api/identify", { method: "POST", body: form });
      say("identify-status", r.faces.length + " face(s) in " + r.width + "x" + r.height, "ok");
      showIdentified(file, r);
    } catch (e) {
      say("identify-status", e.message, "error");
    } finally {
      $("identify-submit").disabled = false;
    }
  });
}

function showIdentified(file, r) {
  const img = h("img", { alt: "the uploaded photo" });
  img.src = URL.createObjectURL(file);
  const photo = h("div", { class: "photo" }, img);
  const pct = (v, of) => (100 * v / of) + "%";
  r.faces.forEach((f, i) => {
    const b = f.box || {};
    const el = h("div", { class: "box" + (f.matched ? " match" : "") },
      h("span", { text: (i + 1) + ". " + (f.matched ? f.identity : "unknown") }));
    el.style.left = pct(b.x, r.width); el.style.top = pct(b.y, r.height);
    el.style.width = pct(b.w, r.width); el.style.height = pct(b.h, r.height);
    photo.append(el);
  });
  const rows = r.faces.map((f, i) => h("tr", { class: "face-row" },
    h("td", { text: (i + 1) + ". " + (f.matched ? f.identity : "unknown") }),
    h("td", { text: typeof f.score === "number" ? f.score.toFixed(3) : "" }),
    h("td", { text: Math.round(f.face_px) + " px" }),
    h("td", { text: f.restored ? (f.restorer || "yes") : "no" }),
    h("td", { text: (f.candidates || []).map((c) => c.name + " " + c.score.toFixed(2)).join(", ") })));
  $("identify-result").replaceChildren(
    h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["face", "score", "size", "restored", "candidates"].map((t) => h("th", { text: t })))),
      h("tbody", {}, rows))),
    photo);
}

// ---- counters ---------------------------------------------------------------------------------------

function table(headers, rows) {
  return h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", { text: t })))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", { text: c === null || c === undefined ? "–" : c })))))));
}

function ms(v) { return typeof v === "number" ? v.toFixed(v < 10 ? 1 : 0) + " ms" : null; }

async function loadCounters() {
  let s;
  try {
    s = await api("/api/status");
  } catch (e) {
    say("counters-status", e.message, "error");
    return;
  }
  say("counters-status", s.pipeline ? "" : "No camera runs in this process (farsight serve): per-camera counters come from farsight run.");
  const ev = s.events || {};
  const total = (k) => Object.values(ev[k] || {}).reduce((a, b) => a + b, 0);
  const kpi = (v, k) => h("div", { class: "card kpi" }, h("div", { class: "v", text: v }), h("div", { class: "k", text: k }));
  const out = [
    h("div", { class: "kpis" },
      kpi(s.ready ? "ready" : "starting", "state"),
      kpi(String((s.cameras || []).length), "cameras"),
      kpi(String((ev.match || {}).final || 0), "visits matched"),
      kpi(String((ev.unknown || {}).final || 0), "visits unknown"),
      kpi(String(total("match") + total("unknown")), "events sent"),
      kpi(s.rss_bytes ? Math.round(s.rss_bytes / 1048576) + " MiB" : "–", "memory"),
      kpi(Math.round(s.uptime_s) + " s", "uptime")),
  ];
  if ((s.cameras || []).length) {
    out.push(h("h3", { text: "Per camera" }), table(
      ["camera", "frames in", "passed on", "dropped", "errors", "visits matched", "visits unknown", "p50", "p99"],
      s.cameras.map((c) => [c.camera, c.frames_in, c.frames_out, c.dropped, c.errors,
        (c.visits || {}).match, (c.visits || {}).unknown, ms(c.p50_ms), ms(c.p99_ms)])));
  }
  if ((s.stages || []).length) {
    out.push(h("h3", { text: "Stages" }), table(["stage", "in", "out", "dropped", "errors", "p50", "p99"],
      s.stages.map((t) => [t.stage, t.in, t.out, t.dropped, t.errors, ms(t.p50_ms), ms(t.p99_ms)])));
  }
  $("counters").replaceChildren(...out);
}

// ---- views ------------------------------------------------------------------------------------------

const VIEWS = { gallery: loadGallery, events: loadEvents, visitors: loadVisitors, identify: null, counters: loadCounters };
let current = "gallery";
let timer = null;

function show(view) {
  if (!(view in VIEWS)) view = "gallery";
  current = view;
  for (const name of Object.keys(VIEWS)) $("view-" + name).hidden = name !== view;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.view === view);
  if (VIEWS[view]) VIEWS[view]();
  clearInterval(timer);
  // Counters change on their own: refresh them while they are shown.
  if (view === "counters") timer = setInterval(loadCounters, 2000);
}

document.addEventListener("DOMContentLoaded", () => {
  setupToken();
  setupGallery();
  setupIdentify();
  $("events-kind").addEventListener("change", renderEvents);
  $("events-camera").addEventListener("change", renderEvents);
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));
  show(location.hash.slice(1) || "gallery");
  startStream();
});
