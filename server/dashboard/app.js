// The dashboard: camera tiles with a live activity chart, the queue of alerts to review, and
// the event history. Everything shown comes from the token-checked API (docs/dashboard.md);
// text from the server is set with textContent only, never parsed as HTML.

import { ApiError, Unauthorized, api, blob, subscribe, token } from "./api.js";
import uPlot from "./vendor/uPlot.esm.js";

const CAMERAS_EVERY_MS = 2000;
const CHART_SECONDS = 120; // how much activity history a camera's chart shows
const CHART_GAP_SECONDS = 5; // scores come every second; a longer silence breaks the line
const PREVIEW_EVERY_MS = 2000; // an online camera's depth preview is read again this often
const PAGE = 50; // events per history page
const ALERTS_EVERY_MS = 5000; // the queue is read again this often (the feed is per server)
const ALERTS_LISTED = 200; // the newest unreviewed alerted events the queue shows

const $ = (selector) => document.querySelector(selector);
const el = (tag, props = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(node.dataset, v);
    else node[k] = v;
  }
  node.append(...children);
  return node;
};
const percent = (p) => (p === null || p === undefined ? "–" : `${Math.round(100 * p)} %`);
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");

// ---- sign-in -------------------------------------------------------------------------------

let stopFeed = () => {};
let timers = [];

function signOut(message = "") {
  token.clear();
  stopFeed();
  timers.forEach(clearInterval);
  $("main").hidden = true;
  $("#notice").hidden = true;
  $("#sign-out").hidden = true;
  $("#login-error").textContent = message;
  $("#token").value = "";
  if (!$("#login").open) $("#login").showModal();
}

async function signIn() {
  try {
    await api("/v1/model"); // checks the token (or that the server runs without one)
  } catch (e) {
    if (e instanceof Unauthorized) {
      return signOut(token.get() ? "The server refused that token." : "");
    }
    $("#login-error").textContent = `The server did not answer: ${e.message}`;
    if (!$("#login").open) $("#login").showModal();
    return;
  }
  if ($("#login").open) $("#login").close();
  $("#sign-out").hidden = !token.get();
  if (!(await eventStoreOn())) {
    $("#notice").textContent =
      "This server keeps no events (its event store is off: events_db = off), " +
      "so there is nothing to show here.";
    $("#notice").hidden = false;
    return;
  }
  $("main").hidden = false;
  start();
}

// The event API is mounted only when the server keeps events.
async function eventStoreOn() {
  try {
    await api("/v1/events", { query: { limit: 1 } });
    return true;
  } catch (e) {
    return !(e instanceof ApiError && e.status === 404);
  }
}

$("#login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  token.set($("#token").value.trim());
  sound.unlock(); // a user gesture: browsers let audio play after one
  signIn();
});
$("#sign-out").addEventListener("click", () => signOut());

// ---- sound ---------------------------------------------------------------------------------

const sound = {
  context: null,
  unlock() {
    this.context = this.context || new AudioContext();
    this.context.resume();
  },
  // Two short tones, made by the page itself (no audio file to fetch).
  alert() {
    if (!$("#sound").checked || !this.context) return;
    const t0 = this.context.currentTime;
    for (const [offset, hz] of [[0, 880], [0.25, 660]]) {
      const osc = this.context.createOscillator();
      const gain = this.context.createGain();
      osc.frequency.value = hz;
      gain.gain.setValueAtTime(0.2, t0 + offset);
      gain.gain.exponentialRampToValueAtTime(0.001, t0 + offset + 0.2);
      osc.connect(gain).connect(this.context.destination);
      osc.start(t0 + offset);
      osc.stop(t0 + offset + 0.2);
    }
    document.body.dataset.alerted = String(Number(document.body.dataset.alerted || 0) + 1);
  },
};
document.addEventListener("click", () => sound.unlock(), { once: true });

// ---- cameras -------------------------------------------------------------------------------

const tiles = new Map(); // camera id -> {node, chart, times, values, previewUrl}

function tileFor(id) {
  let tile = tiles.get(id);
  if (tile) return tile;
  const chartBox = el("div", { className: "chart" });
  const node = el(
    "article",
    { className: "tile", dataset: { camera: id } },
    el("h3", { textContent: id }),
    el("p", { className: "online" }),
    el("p", { className: "action" }),
    el("p", { className: "fps" }),
    chartBox,
  );
  $("#cameras").append(node);
  $("#camera-ids").append(el("option", { value: id }));
  const times = [];
  const values = [];
  const chart = new uPlot(
    {
      width: 280,
      height: 110,
      legend: { show: false },
      cursor: { show: false },
      // the last CHART_SECONDS up to the newest point, however few points there are yet
      scales: { x: { range: (u, min, max) => [max - CHART_SECONDS, max] }, y: { range: [0, 1] } },
      axes: [{ size: 24 }, { size: 40, values: (u, ticks) => ticks.map((t) => t.toFixed(1)) }],
      series: [{}, { label: "top action", stroke: "#c0392b", fill: "rgba(192,57,43,0.15)" }],
    },
    [times, values],
    chartBox,
  );
  tile = { node, chart, times, values };
  tiles.set(id, tile);
  $("#cameras-empty").hidden = true;
  return tile;
}

// One point of a camera's activity chart: seconds since the epoch, a probability. After a
// silence (a stream that stopped, a demo between scenes) a null point breaks the line, so the
// chart does not draw activity across time nothing was scored.
function plot(tile, seconds, value) {
  if (value === null || value === undefined) return;
  const last = tile.times.length ? tile.times[tile.times.length - 1] : null;
  if (last !== null && seconds <= last) return;
  if (last !== null && seconds - last > CHART_GAP_SECONDS) {
    tile.times.push((last + seconds) / 2);
    tile.values.push(null);
  }
  tile.times.push(seconds);
  tile.values.push(value);
  while (tile.times.length && tile.times[0] < seconds - CHART_SECONDS) {
    tile.times.shift();
    tile.values.shift();
  }
  tile.chart.setData([tile.times, tile.values]);
  tile.node.dataset.points = String(tile.values.filter((v) => v !== null).length);
}

function showCamera(camera) {
  const tile = tileFor(camera.id);
  const online = Boolean(camera.connected);
  tile.node.dataset.online = String(online);
  tile.node.querySelector(".online").textContent = online ? "online" : "offline";
  const top = camera.top;
  tile.node.querySelector(".action").textContent = top
    ? `${top.label} ${percent(top.score)}`
    : "no action yet";
  const drops = camera.drops ? `, ${camera.drops} dropped` : "";
  tile.node.querySelector(".fps").textContent = `${camera.fps.toFixed(1)} fps${drops}`;
  // one point per clip the server stored for it, at the time the clip's frame arrived
  if (top && camera.last_frame_at) plot(tile, Date.parse(camera.last_frame_at) / 1000, top.score);
}

// ---- depth previews (a server started with --preview) -------------------------------------

let previewsOn = true; // until the server answers preview_off: that takes a restart to change
let previewsBusy = false; // one round of reads at a time, however slow the server

// The tile's preview image from a blob: URL (the token goes in a header, never in a URL);
// null removes it.
function showPreview(id, tile, image) {
  if (tile.previewUrl) URL.revokeObjectURL(tile.previewUrl); // the shown image stays shown
  tile.previewUrl = image ? URL.createObjectURL(image) : null;
  let img = tile.node.querySelector("img.preview");
  if (!image) return img?.remove();
  if (!img) {
    img = el("img", { className: "preview", alt: `depth seen by ${id} (near red, far blue)` });
    tile.node.querySelector("h3").after(img);
  }
  img.src = tile.previewUrl;
}

async function refreshPreviews() {
  if (!previewsOn || previewsBusy || document.hidden) return;
  previewsBusy = true;
  try {
    await readPreviews();
  } finally {
    previewsBusy = false;
  }
}

async function readPreviews() {
  for (const [id, tile] of tiles) {
    if (tile.node.dataset.online !== "true") {
      showPreview(id, tile, null);
      continue;
    }
    try {
      showPreview(id, tile, await blob(`/v1/cameras/${encodeURIComponent(id)}/preview`));
    } catch (e) {
      if (e instanceof Unauthorized) return signOut("The server refused the token.");
      if (e instanceof ApiError && e.code === "preview_off") {
        previewsOn = false;
        for (const [other, t] of tiles) showPreview(other, t, null);
        return;
      }
      showPreview(id, tile, null); // not streaming to this server (another one's camera)
    }
  }
}

async function refreshCameras() {
  try {
    const answer = await api("/v1/cameras");
    for (const camera of answer.cameras) showCamera(camera);
  } catch (e) {
    if (e instanceof Unauthorized) signOut("The server refused the token.");
  }
}

// ---- alerts to review ----------------------------------------------------------------------

const queued = new Map(); // event id -> list item
const heard = new Set(); // the alerts the sound was played for (once each)
let alertsLoaded = false; // the first list is read without a sound

// The queue: events the alert rules alerted about that nobody has reviewed yet (the steady
// events that alert nobody stay in the history only).
function isAlert(event) {
  return event.review === "new" && event.alerted;
}

function showAlert(event) {
  if (event.review !== "new") return dropAlert(event.id);
  // one queued stays until reviewed (a change relayed from another server may not say
  // `alerted`; the next read of the queue does)
  if (!event.alerted && !queued.has(event.id)) return;
  let item = queued.get(event.id);
  if (!item) {
    item = el("li", { className: "alert", dataset: { event: event.id, start: event.start } });
    // newest first, whichever way it came (the feed and the reads may cross)
    const start = Date.parse(event.start);
    const older = [...$("#alerts").children].find((i) => Date.parse(i.dataset.start) < start);
    $("#alerts").insertBefore(item, older || null);
    queued.set(event.id, item);
  }
  const review = (action) =>
    el("button", {
      type: "button",
      className: action,
      textContent: action === "acknowledge" ? "acknowledge" : "false positive",
      onclick: () => reviewEvent(event.id, action),
    });
  item.replaceChildren(
    el("strong", { textContent: event.label }),
    el("span", { textContent: ` on ${event.camera_id}, ${percent(event.confidence)}, ` }),
    el("time", { textContent: when(event.start) }),
    event.state === "open" ? el("span", { className: "ongoing", textContent: " ongoing" }) : "",
    el("span", { className: "buttons" }, review("acknowledge"), review("false_positive")),
  );
  countAlerts();
}

function dropAlert(id) {
  queued.get(id)?.remove();
  queued.delete(id);
  countAlerts();
}

function countAlerts() {
  $("#alert-count").textContent = String(queued.size);
  $("#alerts-empty").hidden = queued.size > 0;
}

// `action`: "acknowledge" or "false_positive"; the server records who (the token's name).
async function reviewEvent(id, action) {
  try {
    const event = await api(`/v1/events/${encodeURIComponent(id)}/review`, { body: { action } });
    showAlert(event);
    updateHistory(event);
  } catch (e) {
    if (e instanceof Unauthorized) signOut("The server refused the token.");
    else alert(`Review failed: ${e.message}`);
  }
}

// The queue read again: what the feed missed (a reconnect; events another server stored)
// is added, with the sound, and what was reviewed elsewhere leaves. Only items queued before
// the request can leave: one the feed added meanwhile is not in the answer yet.
async function refreshAlerts() {
  const before = new Set(queued.keys());
  const query = { review: "new", alerted: "true", limit: ALERTS_LISTED };
  const answer = await api("/v1/events", { query });
  const listed = new Set(answer.events.map((e) => e.id));
  for (const id of before) {
    if (!listed.has(id)) dropAlert(id);
  }
  const fresh = answer.events.filter((e) => !queued.has(e.id));
  for (const event of fresh) showAlert(event);
  if (alertsLoaded && fresh.some((e) => !heard.has(e.id))) sound.alert();
  for (const event of fresh) heard.add(event.id);
  alertsLoaded = true;
  $("#alerts").dataset.loaded = "true";
}

// ---- history -------------------------------------------------------------------------------

let cursor = null;

function filters() {
  const query = {};
  for (const [k, v] of new FormData($("#filters"))) {
    if (v === "") continue;
    query[k] = k === "since" || k === "until" ? new Date(v).toISOString() : v;
  }
  return query;
}

function historyRow(event) {
  return el(
    "tr",
    { dataset: { event: event.id } },
    el("td", { textContent: when(event.start) }),
    el("td", { textContent: event.state === "open" ? "ongoing" : when(event.end) }),
    el("td", { textContent: event.camera_id }),
    el("td", { textContent: event.label }),
    el("td", { textContent: percent(event.confidence) }),
    el("td", { className: "review", textContent: event.review.replace("_", " ") }),
  );
}

async function loadHistory(more = false) {
  $("#history-error").textContent = "";
  try {
    const query = { ...filters(), limit: PAGE };
    if (more && cursor) query.cursor = cursor;
    const answer = await api("/v1/events", { query });
    const rows = answer.events.map(historyRow);
    if (more) $("#history tbody").append(...rows);
    else $("#history tbody").replaceChildren(...rows);
    cursor = answer.next_cursor || null;
    $("#more").hidden = !cursor;
  } catch (e) {
    if (e instanceof Unauthorized) signOut("The server refused the token.");
    else $("#history-error").textContent = e.message;
  }
}

// A changed event replaces its row; a new one goes on top while the history is unfiltered
// (a filtered list is read again with the filter button).
function updateHistory(event, started = false) {
  const row = $(`#history tr[data-event="${CSS.escape(event.id)}"]`);
  if (row) row.replaceWith(historyRow(event));
  else if (started && Object.keys(filters()).length === 0) {
    $("#history tbody").prepend(historyRow(event));
  }
}

$("#filters").addEventListener("submit", (e) => {
  e.preventDefault();
  loadHistory();
});
$("#more").addEventListener("click", () => loadHistory(true));

// ---- the live feed -------------------------------------------------------------------------

// `event` messages: {change, event} as events start, update, end, are reviewed; `camera`
// messages: a camera's stored state.
function onFeed(message) {
  const data = JSON.parse(message.data);
  if (message.event === "camera") return showCamera(data);
  if (message.event !== "event") return; // a kind this page does not know (a newer server's)
  const event = data.event;
  showAlert(event);
  updateHistory(event, data.change === "started");
  if (isAlert(event) && !heard.has(event.id)) {
    heard.add(event.id);
    sound.alert();
  }
}

function start() {
  stopFeed();
  timers.forEach(clearInterval);
  refreshCameras();
  timers = [
    setInterval(refreshCameras, CAMERAS_EVERY_MS),
    setInterval(() => refreshAlerts().catch(() => {}), ALERTS_EVERY_MS),
    setInterval(refreshPreviews, PREVIEW_EVERY_MS),
  ];
  loadHistory();
  stopFeed = subscribe("/v1/events/feed", {
    onMessage: onFeed,
    onState: (state) => {
      $("#feed-status").dataset.state = state;
      $("#feed-status").textContent = `feed: ${state}`;
      // (re)connected: what changed while away is read again, the feed then keeps it current
      if (state === "live") refreshAlerts().catch(() => {});
    },
    onUnauthorized: () => signOut("The server refused the token."),
  });
}

signIn();
