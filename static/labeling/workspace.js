// The annotator workspace: keyboard labeling against /api/v1/ (see docs/annotating.md).
//
// - The next item is leased and its image preloaded while the current one is shown, so a
//   label shows the next item at once.
// - Submits are optimistic: an annotation goes into an outbox (also in localStorage) and is
//   sent in the background, retried with the SAME client_id (the server is idempotent on
//   it), so nothing is lost when the network drops or the tab is closed.
// - Time on item counts only while the tab is visible and the user was active recently.
// No dependencies; user-provided text only ever goes through textContent.

const cfg = JSON.parse(document.getElementById("ws-config").textContent);
const root = document.getElementById("ws");
const $ = (id) => document.getElementById(id);
const img = $("ws-image"), stage = $("ws-stage"), message = $("ws-message"), errorBox = $("ws-error");
const IDLE_MS = 1000 * (Number(root.dataset.idleSeconds) || 30);
const UNDO_MS = 1000 * cfg.undoWindowSeconds;
const API = cfg.apiRoot;
const STORE_KEY = `annotate.outbox.${cfg.userId}.${cfg.projectId}`;
const classById = new Map(cfg.classes.map((c) => [c.id, c]));
const classByKey = new Map(cfg.classes.filter((c) => c.shortcut).map((c) => [c.shortcut.toLowerCase(), c]));
const commandByKey = new Map(Object.entries(cfg.keys).map(([cmd, key]) => [key.toLowerCase(), cmd]));
if (commandByKey.get("+") === "zoom_in") commandByKey.set("=", "zoom_in");
const buttons = new Map([...document.querySelectorAll(".class-btn")].map((b) => [Number(b.dataset.classId), b]));

let current = null; // the slot on screen: {lease, item, suggestion, startedAt, activeMs}
let ahead = []; // leased and preloaded slots, shown next
let prefetching = null; // the promise of the prefetch in flight
let noMore = false; // the server said 204: nothing left after what we hold
let sessionCount = 0;
let busy = false; // an undo or a blocking fetch is running
const undoStack = []; // submitted annotations that may still be undone, newest last

// ---- HTTP -------------------------------------------------------------------------------
function csrfToken() {
  const prefix = `${cfg.csrfCookieName}=`;
  const hit = document.cookie.split(";").map((c) => c.trim()).find((c) => c.startsWith(prefix));
  return hit ? decodeURIComponent(hit.slice(prefix.length)) : "";
}

function api(path, { method = "GET", body, keepalive = false } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") Object.assign(headers, { "Content-Type": "application/json", "X-CSRFToken": csrfToken() });
  return fetch(API + path, {
    method, headers, keepalive, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

async function errorOf(res) {
  try {
    const data = await res.json();
    return { code: data.code || `http_${res.status}`, message: data.message || res.statusText };
  } catch {
    return { code: `http_${res.status}`, message: res.statusText || "request failed" };
  }
}

function uuid4() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16)); // plain-http fallback
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// ---- the queue --------------------------------------------------------------------------
function toSlot(data) {
  const slot = { lease: data.lease, item: data.item, suggestion: data.suggestion || null, activeMs: 0, startedAt: null };
  slot.image = new Image(); // preload: the browser caches it for the <img> later
  slot.image.src = data.item.image_url;
  return slot;
}

async function fetchNext(excludeIds) {
  const query = excludeIds.length ? `?exclude=${excludeIds.join(",")}` : "";
  const res = await api(`projects/${cfg.projectId}/next/${query}`);
  if (res.status === 204) return null;
  if (!res.ok) throw Object.assign(new Error("next failed"), await errorOf(res));
  return toSlot(await res.json());
}

// Leases this page holds or has answered without the server knowing yet.
function heldLeaseIds() {
  const slots = [current, ...ahead, ...undoStack.map((h) => h.slot)].filter(Boolean);
  return new Set([...slots.map((s) => s.lease.id), ...outbox.map((op) => op.leaseId)]);
}

// Lease the next item, one we do not already hold. The server resumes any open lease we do
// not exclude, and a label still on its way leaves its lease open there: so wait for the
// outbox (briefly) and never show a lease we hold or answered. null: nothing is left.
async function leaseNext(waitMs) {
  const settle = (ms) => Promise.race([outboxIdle(), new Promise((r) => setTimeout(r, ms))]);
  if (waitMs) await settle(waitMs);
  for (let attempt = 1; ; attempt++) {
    let slot;
    try {
      slot = await fetchNext([current, ...ahead].filter(Boolean).map((s) => s.lease.id));
    } catch (err) {
      if (err.code !== "too_many_leases" || attempt > 3) throw err;
      await settle(1500); // the lease cap counts answers that have not landed yet
      continue;
    }
    if (!slot || !heldLeaseIds().has(slot.lease.id)) return slot;
    if (attempt > 3) throw Object.assign(new Error(), { code: "held", message: "the server resent a held item" });
    await new Promise((r) => setTimeout(r, 700));
  }
}

function ensurePrefetch() {
  if (prefetching || ahead.length || noMore || !current) return prefetching;
  prefetching = leaseNext(1500)
    .then((slot) => { if (slot) ahead.push(slot); else noMore = true; })
    .catch((err) => {
      // Offline: try again, the current item stays usable. A refusal (e.g. too many leases
      // held) is retried when the next item is shown.
      if (err.code) note(`Could not load the next item: ${err.message}`, true);
      else setTimeout(ensurePrefetch, 3000);
    })
    .finally(() => { prefetching = null; });
  return prefetching;
}

async function advance() {
  current = null;
  if (!ahead.length && !noMore) {
    showMessage("Loading…");
    if (prefetching) await prefetching;
    if (!ahead.length && !noMore) {
      try {
        const slot = await leaseNext(0); // the user is waiting: no grace period
        if (current) { if (slot) ahead.push(slot); return; } // an undo showed an item meanwhile
        if (slot) ahead.push(slot); else noMore = true;
      } catch (err) {
        showMessage(err.code ? `Cannot load the next item: ${err.message}` : "Cannot reach the server — retrying…");
        setTimeout(() => { if (!current) advance(); }, 3000);
        return;
      }
    }
  }
  if (current) return;
  if (ahead.length) show(ahead.shift());
  else showMessage(`All done — thank you! You labeled ${sessionCount} item${sessionCount === 1 ? "" : "s"} this session.`);
}

function show(slot) {
  current = slot;
  slot.startedAt = slot.startedAt || new Date().toISOString();
  lastAccrue = lastActivity = performance.now(); // the time before it was shown is not its time
  img.classList.remove("pixelated");
  img.src = slot.item.image_url;
  img.alt = slot.item.original_name;
  img.hidden = false;
  message.textContent = "";
  $("ws-file").textContent = slot.item.original_name;
  $("ws-file").title = slot.item.original_name;
  showSuggestion(slot.suggestion);
  renderStatus();
  ensurePrefetch();
}

function showMessage(text) {
  img.hidden = true;
  message.textContent = text;
  $("ws-file").textContent = "—";
  showSuggestion(null);
  renderStatus();
}

function showSuggestion(s) {
  for (const b of buttons.values()) {
    b.classList.remove("suggested");
    b.querySelector(".class-conf").textContent = "";
  }
  const cls = s && cfg.showSuggestions ? classById.get(s.label_id) : null;
  $("ws-suggestion").hidden = !cls;
  if (!cls) return;
  const pct = `${Math.round(100 * s.confidence)}%`;
  $("ws-suggestion-name").textContent = cls.name;
  $("ws-suggestion-conf").textContent = `(${pct})`;
  const button = buttons.get(cls.id);
  button.classList.add("suggested");
  button.querySelector(".class-conf").textContent = pct;
}

// ---- commands ---------------------------------------------------------------------------
function submit(labelId) {
  if (!current || busy || !classById.has(labelId)) return;
  accrue();
  const slot = current;
  const body = {
    lease: slot.lease.id, label: labelId, client_id: uuid4(), duration_ms: Math.round(slot.activeMs),
    started_at: slot.startedAt, suggestion_accepted: !!slot.suggestion && slot.suggestion.label_id === labelId,
  };
  const entry = { slot, clientId: body.client_id, at: Date.now(), annotationId: null };
  entry.done = new Promise((resolve) => { entry.resolve = resolve; });
  undoStack.push(entry);
  if (undoStack.length > 50) undoStack.shift();
  enqueue({ id: body.client_id, path: "annotations/", body, leaseId: slot.lease.id, name: slot.item.original_name });
  sessionCount += 1;
  flash(buttons.get(labelId));
  advance();
}

function acceptSuggestion() {
  if (current?.suggestion && cfg.showSuggestions) submit(current.suggestion.label_id);
}

function skip() {
  if (!current || busy) return;
  const { lease, item } = current;
  enqueue({ id: uuid4(), path: `leases/${lease.id}/skip/`, body: {}, leaseId: lease.id, name: item.original_name });
  advance();
}

async function undo() {
  const entry = undoStack[undoStack.length - 1];
  if (busy) return;
  if (!entry) return note("Nothing to undo.");
  if (Date.now() - entry.at > UNDO_MS) return note("Too late to undo: the 2-minute window has passed.");
  busy = true;
  try {
    let slot = null;
    const queued = outbox.findIndex((op) => op.id === entry.clientId);
    if (queued >= 0 && inflight !== entry.clientId) {
      outbox.splice(queued, 1); // never sent: just take it back, the lease is still ours
      saveOutbox();
      slot = entry.slot;
    } else {
      // Sent or being sent: wait for the server's id, but never block labeling for long.
      const annotationId = await Promise.race([entry.done, new Promise((r) => setTimeout(r, 5000))]);
      if (annotationId === undefined) return note("That label is still being sent: try undo again in a moment.");
      if (annotationId) {
        const res = await api(`annotations/${annotationId}/undo/`, { method: "POST", body: {} });
        if (!res.ok) {
          const err = await errorOf(res);
          if (err.code === "undo_window_passed") return note("Too late to undo: the 2-minute window has passed.");
          return note(`Undo failed: ${err.message}`, true);
        }
        slot = toSlot(await res.json());
        // The retracted label stops counting: its time moves to the new answer.
        Object.assign(slot, { activeMs: entry.slot.activeMs, startedAt: entry.slot.startedAt });
      }
    }
    if (undoStack.includes(entry)) undoStack.splice(undoStack.indexOf(entry), 1);
    if (!slot) return note("That label was not saved, so there is nothing to undo.");
    sessionCount -= 1;
    if (current) ahead.unshift(current);
    show(slot);
  } catch {
    note("Undo failed: cannot reach the server.", true);
  } finally {
    busy = false;
    renderStatus();
  }
}

// ---- the outbox: annotations and skips, sent in order, retried, kept across reloads ----
let outbox = loadOutbox();
let inflight = null; // id of the op being sent
let flushing = null;
let failures = 0;
let retryTimer = null;
let idleWaiters = [];

function loadOutbox() {
  try { return JSON.parse(localStorage.getItem(STORE_KEY)) || []; } catch { return []; }
}
function saveOutbox() {
  try { localStorage.setItem(STORE_KEY, JSON.stringify(outbox)); } catch { /* private mode: memory only */ }
  renderStatus();
}
function enqueue(op) {
  outbox.push(op);
  saveOutbox();
  flush();
}
function outboxIdle() {
  return outbox.length ? new Promise((resolve) => idleWaiters.push(resolve)) : Promise.resolve();
}

function flush() {
  clearTimeout(retryTimer);
  flushing = flushing || sendAll().finally(() => { flushing = null; });
  return flushing;
}

async function sendAll() {
  while (outbox.length) {
    const op = outbox[0];
    inflight = op.id;
    let res;
    try {
      res = await api(op.path, { method: "POST", body: op.body });
    } catch {
      res = null; // network down
    }
    const retry = !res || res.status >= 500 || [401, 403, 408, 429].includes(res.status);
    if (retry) inflight = null; // else: only once it is off the outbox (undo checks it)
    if (res && (res.status === 401 || res.status === 403)) {
      return note("Your session has ended. Sign in again: your unsent labels are kept and sent then.", true, true);
    }
    if (retry) {
      failures += 1;
      const delay = Math.min(30000, 1000 * 2 ** Math.min(failures, 5));
      note(`Offline: ${outbox.length} waiting, retrying in ${Math.round(delay / 1000)} s.`, true);
      retryTimer = setTimeout(flush, delay);
      return;
    }
    failures = 0;
    const data = res.ok ? await res.json().catch(() => ({})) : await errorOf(res);
    if (outbox[0] === op) outbox.shift();
    inflight = null;
    saveOutbox();
    const entry = undoStack.find((h) => h.clientId === op.id);
    if (res.ok) {
      if (entry) { entry.annotationId = data.id; entry.resolve(data.id); }
    } else if (!(op.path.endsWith("/skip/") && res.status === 409)) { // a repeated skip is fine
      if (entry) { entry.resolve(null); undoStack.splice(undoStack.indexOf(entry), 1); sessionCount -= 1; }
      note(`Not saved: ${op.name}: ${data.message}`, true, true);
    }
  }
  if (!errorBox.dataset.sticky) errorBox.hidden = true;
  idleWaiters.forEach((resolve) => resolve());
  idleWaiters = [];
}

// ---- active time ------------------------------------------------------------------------
let lastActivity = performance.now();
let lastAccrue = performance.now();

function accrue() {
  const now = performance.now();
  if (current && document.visibilityState === "visible") {
    const until = Math.min(now, lastActivity + IDLE_MS); // idle time past the gap does not count
    if (until > lastAccrue) current.activeMs += until - lastAccrue;
  }
  lastAccrue = now;
}
function markActive() {
  accrue();
  lastActivity = performance.now();
}
for (const type of ["mousemove", "mousedown", "keydown", "wheel", "touchstart", "scroll"]) {
  window.addEventListener(type, markActive, { passive: true, capture: true });
}
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") { lastAccrue = performance.now(); markActive(); flush(); } else accrue();
});

// ---- status line and notes ----------------------------------------------------------------
function renderStatus() {
  $("ws-count").textContent = String(sessionCount);
  $("ws-outbox").textContent = outbox.length ? `${outbox.length}${failures ? " (offline)" : ""}` : "0";
  const undoable = undoStack.length && Date.now() - undoStack[undoStack.length - 1].at <= UNDO_MS;
  $("ws-undo").disabled = !undoable;
  $("ws-skip").disabled = !current;
  for (const b of buttons.values()) b.disabled = !current;
}
function renderTime() {
  accrue();
  const s = Math.floor((current?.activeMs || 0) / 1000);
  $("ws-time").textContent = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  renderStatus();
}
let noteTimer = null;
function note(text, isError = false, sticky = false) {
  errorBox.textContent = text;
  errorBox.hidden = false;
  errorBox.classList.toggle("info", !isError);
  if (sticky) errorBox.dataset.sticky = "1"; else delete errorBox.dataset.sticky;
  clearTimeout(noteTimer);
  if (!sticky) noteTimer = setTimeout(() => { errorBox.hidden = true; }, 6000);
}
errorBox.addEventListener("click", () => { errorBox.hidden = true; delete errorBox.dataset.sticky; });
function flash(button) {
  if (!button) return;
  button.classList.add("flash");
  setTimeout(() => button.classList.remove("flash"), 150);
}

// ---- view: zoom and contrast (for medical images) ---------------------------------------
const ZOOMS = [1, 1.5, 2, 3, 4, 6, 8];
const PRESETS = [
  ["normal", "none"], ["contrast+", "contrast(1.6)"], ["bright", "brightness(1.5)"],
  ["dark+contrast", "brightness(0.8) contrast(1.9)"], ["inverted", "invert(1)"],
];
let zoom = 0, preset = 0;

function applyView() {
  img.style.transform = `scale(${ZOOMS[zoom]})`;
  img.style.filter = PRESETS[preset][1];
  $("ws-preset").textContent = PRESETS[preset][0];
  // Tiny images (28x28) blown up to the screen: show crisp pixels, not a blur.
  const fit = Math.min(stage.clientWidth / img.naturalWidth, stage.clientHeight / img.naturalHeight);
  img.classList.toggle("pixelated", img.naturalWidth > 0 && fit * ZOOMS[zoom] >= 2);
}
const view = {
  zoom_in: () => { zoom = Math.min(zoom + 1, ZOOMS.length - 1); },
  zoom_out: () => { zoom = Math.max(zoom - 1, 0); },
  contrast: () => { preset = (preset + 1) % PRESETS.length; },
  reset_view: () => { zoom = 0; preset = 0; img.style.transformOrigin = "50% 50%"; },
};
img.addEventListener("load", applyView);
window.addEventListener("resize", applyView);
stage.addEventListener("mousemove", (e) => { // zoom towards the pointer
  const r = stage.getBoundingClientRect();
  img.style.transformOrigin = `${(100 * (e.clientX - r.left)) / r.width}% ${(100 * (e.clientY - r.top)) / r.height}%`;
});
stage.addEventListener("wheel", (e) => {
  e.preventDefault();
  (e.deltaY < 0 ? view.zoom_in : view.zoom_out)();
  applyView();
}, { passive: false });

// ---- input --------------------------------------------------------------------------------
const commands = {
  accept: acceptSuggestion, skip, undo, help: toggleHelp, ...Object.fromEntries(
    Object.entries(view).map(([name, fn]) => [name, () => { fn(); applyView(); }])),
};
function toggleHelp() {
  const help = $("ws-help");
  if (help.open) help.close(); else help.showModal();
}

document.addEventListener("keydown", (e) => {
  if (e.target instanceof Element && e.target.closest("input, textarea, select, [contenteditable]")) return;
  const key = e.key.toLowerCase();
  if ($("ws-help").open && key !== "?") return; // Esc closes the dialog natively
  let action = null;
  if ((e.ctrlKey || e.metaKey) && key === "z" && !e.shiftKey && !e.altKey) action = undo;
  else if (e.ctrlKey || e.metaKey || e.altKey) return;
  else if (key === "enter") action = acceptSuggestion;
  else if (classByKey.has(key)) action = () => submit(classByKey.get(key).id);
  else if (commandByKey.has(key)) action = commands[commandByKey.get(key)];
  else if (key === "?") action = toggleHelp;
  if (!action) return;
  e.preventDefault(); // also stops Enter from "clicking" a focused button a second time
  const repeatable = ["zoom_in", "zoom_out"].includes(commandByKey.get(key));
  if (!e.repeat || repeatable) action();
});

for (const [id, b] of buttons) b.addEventListener("click", () => { b.blur(); submit(id); });
$("ws-skip").addEventListener("click", (e) => { e.currentTarget.blur(); skip(); });
$("ws-undo").addEventListener("click", (e) => { e.currentTarget.blur(); undo(); });
$("ws-help-open").addEventListener("click", (e) => { e.currentTarget.blur(); toggleHelp(); });
for (const b of document.querySelectorAll("[data-view]")) {
  b.addEventListener("click", () => { b.blur(); commands[b.dataset.view](); });
}

// ---- page lifecycle -------------------------------------------------------------------------
window.addEventListener("online", flush);
window.addEventListener("pagehide", () => {
  // Hand back what we hold but have not labeled, so others get those items now rather than
  // when the lease expires. sendBeacon cannot set X-CSRFToken: keepalive fetch can.
  for (const slot of [current, ...ahead].filter(Boolean)) {
    api(`leases/${slot.lease.id}/release/`, { method: "POST", body: {}, keepalive: true }).catch(() => {});
  }
  for (const op of outbox) api(op.path, { method: "POST", body: op.body, keepalive: true }).catch(() => {});
  ahead = [];
  current = null;
});
window.addEventListener("pageshow", (e) => {
  if (e.persisted) { noMore = false; advance(); } // back from the bfcache: our leases were released
});

setInterval(renderTime, 1000);
flush();
advance();
