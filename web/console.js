// camgate console: plain DOM, no framework. WHEP player per
// draft-ietf-wish-whep: POST the offer, wait for ICE gathering, DELETE the
// Location on stop.
"use strict";

const $ = (id) => document.getElementById(id);

// ---- API credentials (http.auth) ----
// The gateway may ask for an API key (bearer) or a user and password
// (basic). The console asks once, keeps the answer for this tab only
// (sessionStorage) and adds it to its own /api/ calls. `#key=…` in the
// URL presets a key (for kiosks and automated checks); it is then removed
// from the address bar.
const auth = {
  get() { return sessionStorage.getItem("camgate-auth") || ""; },
  set(v) { if (v) sessionStorage.setItem("camgate-auth", v); else sessionStorage.removeItem("camgate-auth"); },
  // The key as an EventSource URL parameter (it cannot send headers).
  token() { const v = auth.get(); return v.startsWith("Bearer ") ? v.slice(7) : ""; },
};
{
  const m = location.hash.match(/[#&]key=([^&]+)/);
  if (m) {
    auth.set(`Bearer ${decodeURIComponent(m[1])}`);
    // Keep the rest of the fragment (e.g. #play=…), drop the key.
    const rest = location.hash.slice(1).split("&").filter((p) => !p.startsWith("key=")).join("&");
    history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
  }
}
const nativeFetch = window.fetch.bind(window);
let asking = null;
// Ask for credentials after a 401 from the API: one prompt at a time.
function askCredentials(challenge) {
  if (!asking) {
    asking = Promise.resolve().then(() => {
      const basic = /^basic/i.test(challenge);
      const answer = window.prompt(basic
        ? "camgate API: user:password"
        : "camgate API key (or user:password)");
      if (!answer) return false;
      auth.set(answer.includes(":") && (basic || !/^[A-Za-z0-9._~+\/-]+$/.test(answer))
        ? `Basic ${btoa(answer)}`
        : `Bearer ${answer.trim()}`);
      return true;
    }).finally(() => { setTimeout(() => { asking = null; }, 0); });
  }
  return asking;
}
window.fetch = async (input, init = {}) => {
  const url = new URL(typeof input === "string" ? input : input.url, location.href);
  const api = url.origin === location.origin && url.pathname.startsWith("/api/");
  const send = () => {
    if (!api || !auth.get()) return nativeFetch(input, init);
    const headers = new Headers(init.headers || {});
    headers.set("Authorization", auth.get());
    return nativeFetch(input, { ...init, headers });
  };
  let r = await send();
  if (api && r.status === 401) {
    auth.set("");
    if (await askCredentials(r.headers.get("WWW-Authenticate") || "")) r = await send();
  }
  return r;
};
const state = {
  pc: null, resource: null, playing: null,
  // The channel the side panels (presets, recordings, talk) act on.
  selected: null,
  // WHEP session id (from its Location), for playback control.
  session: null,
  // A recording being played: range (Unix s) and where it stands.
  playback: null,
  talk: null,
};

// Text from devices and viewers (stream keys, errors) goes into HTML
// only escaped.
const esc = (v) => String(v).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

async function getJson(path) {
  const r = await fetch(path);
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

const PROTOCOLS = [
  ["gb28181", "GB28181"],
  ["foscam", "Foscam"],
  ["ctel", "China Telecom"],
];

// Every camera of every protocol (GET /api/v1/devices), grouped by
// protocol; a channel's click selects it (the side panels follow its
// capabilities) and plays its stream over WHEP.
async function refreshDevices() {
  let devices;
  try {
    devices = await getJson("/api/v1/devices");
  } catch (e) {
    $("devices").innerHTML = `<div class="note">${e.message}</div>`;
    return;
  }
  state.devices = devices;
  const root = $("devices");
  root.textContent = "";
  if (devices.length === 0) root.innerHTML = '<div class="note">no device registered yet</div>';
  for (const [protocol, title] of PROTOCOLS) {
    const mine = devices.filter((d) => d.protocol === protocol);
    if (mine.length === 0) continue;
    const section = document.createElement("section");
    section.className = "protocol";
    section.dataset.protocol = protocol;
    section.innerHTML = `<h3>${title} <span class="count">(${mine.length})</span></h3>`;
    const list = document.createElement("ul");
    section.append(list);
    root.append(section);
    for (const d of mine) {
      const li = document.createElement("li");
      li.className = "device";
      li.dataset.device = d.id;
      li.innerHTML = `<span><i class="dot ${d.online ? "on" : ""}"></i></span>`;
      li.querySelector("span").append(d.name || d.id);
      li.title = `${d.id} ${d.manufacturer || ""} ${d.model || ""} ${d.transport ? `via ${d.transport} ` : ""}${d.address || ""}`;
      const channels = document.createElement("ul");
      li.append(channels);
      list.append(li);
      for (const c of d.channels) {
        const cl = document.createElement("li");
        cl.className = "channel";
        cl.dataset.path = c.stream;
        cl.dataset.protocol = protocol;
        cl.innerHTML = `<i class="dot ${c.online ? "on" : ""}"></i>`;
        cl.append(c.name || c.id);
        const caps = Object.entries(c.capabilities).filter(([, on]) => on).map(([k]) => k);
        const tag = document.createElement("span");
        tag.className = "caps";
        tag.textContent = caps.join(" ");
        cl.append(tag);
        cl.title = `${c.stream}\n${c.play.rtsp}`;
        if (state.playing === c.stream) cl.classList.add("playing");
        cl.onclick = () => { select(d, c); play(c.stream); };
        channels.append(cl);
      }
    }
  }
  const wanted = state.wantPlay;
  if (wanted) {
    state.wantPlay = null;
    const found = channelOf(wanted);
    if (found) select(found.device, found.channel);
  }
}

// The device and channel whose live stream is `path`, if listed.
function channelOf(path) {
  for (const d of state.devices || []) {
    for (const c of d.channels) if (c.stream === path) return { device: d, channel: c };
  }
  return null;
}

async function refreshStreams() {
  try {
    const streams = await getJson("/api/v1/streams");
    const webrtc = {};
    try {
      for (const w of await getJson("/api/v1/webrtc/sessions")) webrtc[w.stream] = (webrtc[w.stream] || 0) + 1;
    } catch (_) { /* the column stays empty */ }
    // `last_frame_age_ms` is newer than the other columns: shown when the
    // gateway reports it.
    const age = (s) => (typeof s.last_frame_age_ms === "number" ? `${(s.last_frame_age_ms / 1000).toFixed(1)} s ago` : "—");
    $("streams").innerHTML = streams.map((s) =>
      `<tr data-key="${esc(s.key)}"><td>${esc(s.key)}</td><td class="state">${esc(s.state)}</td><td class="viewers">${s.viewers}</td>` +
      `<td class="webrtc">${webrtc[s.key] || 0}</td><td class="kbps">${Math.round(s.bitrate_bps / 1000)}</td>` +
      `<td class="frames">${esc(s.frames ?? "—")}</td><td class="age">${age(s)}</td></tr>`
    ).join("") || '<tr><td class="note" colspan="7">none</td></tr>';
  } catch (_) { /* the table keeps its last contents */ }
}

// Each upper platform of `cascade.upstreams`: where and over which SIP
// transport, registration state, lapse,
// keepalives answered/sent and the last error.
async function refreshCascade() {
  try {
    const { upstreams } = await getJson("/api/v1/cascade");
    $("cascade").innerHTML = upstreams.map((u) =>
      `<tr data-name="${esc(u.name)}"><td>${esc(u.name)}</td><td>${esc(u.server_id)} @ ${esc(u.target || u.address)} (${esc((u.transport || "udp").toUpperCase())})</td>` +
      `<td>${esc(u.platform_id)}</td><td class="state">${esc(u.state)}</td>` +
      `<td>${u.expires_in == null ? "—" : `${u.expires_in} s`}</td>` +
      `<td>${u.stats.keepalives_answered}/${u.stats.keepalives_sent}</td><td class="error">${esc(u.last_error || "")}</td></tr>`
    ).join("") || '<tr><td class="note" colspan="7">none configured</td></tr>';
  } catch (_) { /* the table keeps its last contents */ }
}

function waitIceGathering(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    // The server is ICE-lite and needs no candidates from us to connect
    // (it answers our checks), so a slow gatherer does not hold us up.
    setTimeout(resolve, 1000);
  });
}

async function stop() {
  if (state.resource) fetch(state.resource, { method: "DELETE" }).catch(() => {});
  if (state.pc) state.pc.close();
  state.pc = null; state.resource = null; state.playing = null; state.session = null;
  state.playback = null;
  $("playback").hidden = true;
  document.querySelectorAll("#timeline .record.playing").forEach((e) => e.classList.remove("playing"));
  $("video").srcObject = null;
  $("stop").hidden = true;
  $("now-playing").textContent = "stopped";
  document.querySelectorAll("li.channel.playing").forEach((e) => e.classList.remove("playing"));
}

async function play(path) {
  try {
    await startPlaying(path);
  } catch (e) {
    $("now-playing").textContent = `${path}: ${e.message || e}`;
  }
}

async function startPlaying(path) {
  await stop();
  state.playing = path;
  document.querySelectorAll("li.channel").forEach((e) => e.classList.toggle("playing", e.dataset.path === path));
  $("now-playing").textContent = `connecting to ${path}…`;
  const pc = new RTCPeerConnection();
  state.pc = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  pc.ontrack = (ev) => {
    if (ev.track.kind === "video") $("video").srcObject = ev.streams[0] || new MediaStream([ev.track]);
  };
  pc.onconnectionstatechange = () => { $("now-playing").textContent = `${path}: ${pc.connectionState}`; };
  await pc.setLocalDescription(await pc.createOffer());
  await waitIceGathering(pc);
  const r = await whepPost(`/whep/${path}`, path, pc.localDescription.sdp);
  // Another play (or stop) began while this offer was out: this one is
  // stale, and its session is given back at once.
  if (state.pc !== pc) {
    pc.close();
    if (r.status === 201) fetch(new URL(r.headers.get("Location"), location.href), { method: "DELETE" }).catch(() => {});
    return;
  }
  if (r.status !== 201) {
    let msg = `${r.status}`;
    try { msg += ` ${(await r.json()).error}`; } catch (_) {}
    $("now-playing").textContent = `${path}: ${msg}`;
    return;
  }
  state.resource = new URL(r.headers.get("Location"), location.href).toString();
  state.session = state.resource.split("/").pop();
  await pc.setRemoteDescription({ type: "answer", sdp: await r.text() });
  $("stop").hidden = false;
  const range = path.match(/\/playback\/(\d+)-(\d+)$/);
  if (range) showPlayback(Number(range[1]), Number(range[2]));
}

// POST an SDP offer; when the path wants a one-time token (401 with a
// Bearer challenge), mint one for the stream and try once more.
async function whepPost(url, path, sdp) {
  const post = (headers) => fetch(url, {
    method: "POST", headers: { "Content-Type": "application/sdp", ...headers }, body: sdp,
  });
  const r = await post({});
  const challenge = r.headers.get("WWW-Authenticate") || "";
  if (r.status !== 401 || !/bearer/i.test(challenge)) return r;
  const t = await fetch("/api/v1/tokens", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ path: `/${path}` }),
  });
  if (!t.ok) return r;
  const { token } = await t.json();
  return post({ Authorization: `Bearer ${token}` });
}

// Stats shown under the video and mirrored in the page title and
// data-* attributes, so automated checks can read them.
async function refreshStats() {
  const pc = state.pc;
  const el = $("stats");
  if (!pc) { el.textContent = ""; el.dataset.framesDecoded = 0; el.dataset.stream = ""; return; }
  const stats = await pc.getStats();
  // Another play began while the stats were gathered: they are stale.
  if (state.pc !== pc) return;
  let frames = 0, packets = 0, audioPackets = 0, codec = "", audioCodec = "";
  stats.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") {
      frames = s.framesDecoded || 0;
      packets = s.packetsReceived || 0;
      const c = stats.get(s.codecId);
      if (c) codec = `${c.mimeType} ${c.sdpFmtpLine || ""}`;
    }
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      audioPackets = s.packetsReceived || 0;
      const c = stats.get(s.codecId);
      if (c) audioCodec = c.mimeType;
    }
  });
  const v = $("video");
  el.dataset.framesDecoded = frames;
  el.dataset.stream = state.playing || "";
  el.dataset.videoWidth = v.videoWidth;
  el.dataset.audioPackets = audioPackets;
  el.dataset.audioCodec = audioCodec;
  el.textContent = `${v.videoWidth}×${v.videoHeight} · ${frames} frames decoded · ${packets} video packets · ${audioPackets} audio packets ${audioCodec} · ${codec}`;
  document.title = `camgate frames=${frames} width=${v.videoWidth}`;
  showPosition();
}

// The PTZ request of each protocol's own endpoint; null when the
// protocol has no such move.
const CTEL_DIRECTIONS = ["up", "down", "left", "right", "stop"];
const FOSCAM_ACTIONS = ["up", "down", "left", "right", "up_left", "up_right", "down_left", "down_right", "stop"];
function ptzRequest(sel, action, speed) {
  const { protocol, device, channel } = sel;
  if (protocol === "gb28181") return [`/api/v1/devices/${device}/channels/${channel}/ptz`, { action, speed }];
  if (protocol === "foscam" && FOSCAM_ACTIONS.includes(action)) return [`/api/v1/foscam/${device}/ptz`, { action }];
  if (protocol === "ctel" && CTEL_DIRECTIONS.includes(action)) return [`/api/v1/ctel/devices/${device}/ptz`, { channel: Number(channel), direction: action }];
  return null;
}

function ptzCommand(action) {
  if (!state.selected) { $("ptz-note").textContent = "select a channel first"; return; }
  const req = ptzRequest(state.selected, action, Number($("ptz-speed").value));
  if (!req) { $("ptz-note").textContent = `${action}: not in the ${state.selected.protocol} protocol`; return; }
  const [url, body] = req;
  fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  }).then((r) => {
    $("ptz-note").textContent = r.status === 404 || r.status === 405
      ? "PTZ is not available on this gateway"
      : (r.ok ? `${action}` : `PTZ ${action}: ${r.status}`);
    $("ptz-note").dataset.last = r.ok ? `${state.selected.protocol} ${action}` : "";
  }).catch((e) => { $("ptz-note").textContent = e.message; });
}

// Press and hold: move while pressed, stop on release.
for (const b of document.querySelectorAll("#ptz button")) {
  const action = b.dataset.ptz;
  if (action === "stop") { b.onclick = () => ptzCommand("stop"); continue; }
  b.addEventListener("pointerdown", () => ptzCommand(action));
  for (const ev of ["pointerup", "pointerleave"]) {
    b.addEventListener(ev, (e) => { if (e.buttons === 0 && ev === "pointerup" || ev === "pointerleave" && e.buttons) ptzCommand("stop"); });
  }
}

function connectEvents() {
  if (!window.EventSource) return;
  fetch("/api/v1/events/stream", { method: "HEAD" }).then((r) => {
    if (!r.ok) { $("events").textContent = "event feed not available on this gateway"; return; }
    const t = auth.token();
    const es = new EventSource("/api/v1/events/stream" + (t ? `?access_token=${encodeURIComponent(t)}` : ""));
    $("events").textContent = "";
    es.onmessage = (m) => {
      const line = document.createElement("div");
      line.textContent = `${new Date().toLocaleTimeString()} ${m.data}`;
      $("events").prepend(line);
      while ($("events").childElementCount > 200) $("events").lastChild.remove();
    };
    es.onerror = () => { if (es.readyState === EventSource.CLOSED) $("events").textContent = "event feed closed"; };
  }).catch(() => { $("events").textContent = "event feed not available"; });
}

// ---- the selected channel: presets, recordings ----

function channelApi(suffix) {
  const { device, channel } = state.selected;
  return `/api/v1/devices/${device}/channels/${channel}/${suffix}`;
}

// Select a channel: the side panels show what its protocol and
// capabilities allow (PTZ, presets, talk, recordings and downloads).
function select(d, c) {
  if (typeof d === "string") {
    // select(deviceId, channelId): a GB28181 channel by ids, listed or not
    // yet (scripts and bookmarks that predate the protocol groups).
    const path = `gb/${d}/${c}`;
    const found = channelOf(path);
    if (found) return select(found.device, found.channel);
    const all = { ptz: true, presets: true, talk: true, playback: true, snapshot: true, audio: true };
    return select({ protocol: "gb28181", id: d }, { id: c, stream: path, capabilities: all });
  }
  const same = state.selected && state.selected.stream === c.stream;
  state.selected = { protocol: d.protocol, device: d.id, channel: c.id, stream: c.stream, capabilities: c.capabilities };
  const caps = c.capabilities;
  const gb = d.protocol === "gb28181";
  $("selected").textContent = `${d.protocol} ${d.name || d.id} / ${c.name || c.id}`;
  $("selected").dataset.protocol = d.protocol;
  $("ptz-panel").hidden = !caps.ptz;
  $("presets-panel").hidden = !caps.presets;
  // Browser talk is a GB28181 voice broadcast (WebRTC in, G.711 out).
  $("talk-panel").hidden = !(caps.talk && gb);
  $("recordings-panel").hidden = !(caps.playback && gb);
  // Moves the protocol lacks (Foscam: zoom, focus, iris; telecom: also
  // diagonals) are greyed out.
  for (const b of document.querySelectorAll("#ptz button")) b.disabled = !ptzRequest(state.selected, b.dataset.ptz, 1);
  if (same) return;
  loadPresets();
  $("timeline").textContent = "";
  $("rec-note").textContent = "";
  refreshDownloads();
}

async function loadPresets() {
  const el = $("presets");
  if (!state.selected || !state.selected.capabilities.presets) return;
  if (state.selected.protocol !== "gb28181") {
    // Foscam presets cannot be listed: set and call by number.
    el.innerHTML = '<li class="note">numbered presets 0–15: set here, or call</li>';
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.textContent = "call";
    b.dataset.action = "call";
    b.onclick = () => presetCommand("call", Number($("preset-new").value));
    li.append(b);
    el.append(li);
    return;
  }
  el.innerHTML = '<li class="note">loading…</li>';
  let answer;
  try {
    answer = await getJson(channelApi("presets"));
  } catch (e) {
    el.innerHTML = `<li class="note">presets: ${e.message}</li>`;
    return;
  }
  el.textContent = "";
  if (answer.presets.length === 0) el.innerHTML = '<li class="note">no presets</li>';
  for (const p of answer.presets) {
    const li = document.createElement("li");
    li.dataset.preset = p.id;
    const name = document.createElement("span");
    name.textContent = `${p.id} ${p.name || ""}`;
    li.append(name);
    for (const action of ["call", "set", "delete"]) {
      const b = document.createElement("button");
      b.textContent = action;
      b.dataset.action = action;
      b.onclick = () => presetCommand(action, Number(p.id));
      li.append(b);
    }
    el.append(li);
  }
}

async function presetCommand(action, preset) {
  if (!state.selected) { $("preset-note").textContent = "select a channel first"; return; }
  if (state.selected.protocol === "foscam") { foscamPreset(action, preset); return; }
  if (!(preset >= 1 && preset <= 255)) { $("preset-note").textContent = "presets are 1–255"; return; }
  try {
    const r = await fetch(channelApi("presets"), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ action, preset }),
    });
    const body = await r.json();
    $("preset-note").textContent = r.ok ? `${action} ${preset}: ${body.ptz_cmd}` : `${action} ${preset}: ${body.error || r.status}`;
    $("preset-note").dataset.last = r.ok ? `${action} ${preset}` : "";
    if (r.ok && action !== "call") loadPresets();
  } catch (e) {
    $("preset-note").textContent = e.message;
  }
}

async function foscamPreset(action, preset) {
  const act = { set: "preset_set", call: "preset_goto" }[action];
  if (!act) { $("preset-note").textContent = `${action}: not in the Foscam protocol`; return; }
  const r = await fetch(`/api/v1/foscam/${state.selected.device}/ptz`, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ action: act, preset }),
  }).catch((e) => ({ ok: false, status: e.message }));
  $("preset-note").textContent = r.ok ? `${action} ${preset}` : `${action} ${preset}: ${r.status}`;
  $("preset-note").dataset.last = r.ok ? `${action} ${preset}` : "";
}

// ---- download jobs of the selected GB28181 channel ----

function fmtBytes(n) {
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(0)} KiB`;
  return `${n} B`;
}

async function refreshDownloads() {
  const sel = state.selected;
  const body = $("downloads");
  if (!sel || sel.protocol !== "gb28181" || !sel.capabilities.playback) return;
  let jobs;
  try {
    jobs = await getJson(channelApi("downloads"));
  } catch (_) { return; /* keeps its last contents */ }
  if (!Array.isArray(jobs)) jobs = jobs.downloads || [];
  body.innerHTML = jobs.map((j) => {
    const pct = Math.round(Math.min(Math.max(j.progress || 0, 0), 1) * 100);
    return `<tr data-job="${esc(j.id)}" data-state="${esc(j.state)}" data-progress="${pct}"><td>${esc(j.id)}</td>` +
      `<td>${gbOf(j.start).replace("T", " ")} – ${gbOf(j.end).slice(11)}</td><td>${esc(j.state)}${j.error ? `: ${esc(j.error)}` : ""}</td>` +
      `<td><span class="progress"><span style="width:${pct}%"></span></span> ${pct}%</td>` +
      `<td>${fmtBytes(j.bytes || 0)}</td>` +
      `<td>${j.state === "running" ? `<button data-cancel="${esc(j.id)}">cancel</button>` : ""}</td></tr>`;
  }).join("") || '<tr><td class="note" colspan="6">none</td></tr>';
  body.querySelectorAll("button[data-cancel]").forEach((b) => {
    b.onclick = () => fetch(channelApi(`downloads/${b.dataset.cancel}`), { method: "DELETE" }).then(refreshDownloads);
  });
}

async function startDownload() {
  if (!state.selected) { $("dl-note").textContent = "select a channel first"; return; }
  const start = gbTime($("rec-start").value), end = gbTime($("rec-end").value);
  const r = await fetch(channelApi("downloads"), {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ start, end, format: $("dl-format").value }),
  }).catch((e) => ({ ok: false, status: e.message, json: async () => ({}) }));
  let msg = `${r.status}`;
  try { const b = await r.json(); msg = r.ok ? `started ${b.id || ""}` : `${r.status} ${b.error || ""}`; } catch (_) {}
  $("dl-note").textContent = msg;
  refreshDownloads();
}

// `datetime-local` gives `YYYY-MM-DDTHH:MM[:SS]`; the API wants seconds.
function gbTime(value) {
  return value.length === 16 ? `${value}:00` : value.slice(0, 19);
}
// Device times are read as UTC by the gateway; so are they here.
const unix = (gb) => Date.parse(`${gb}Z`) / 1000;
const gbOf = (secs) => new Date(secs * 1000).toISOString().slice(0, 19);

async function searchRecords() {
  if (!state.selected) { $("rec-note").textContent = "select a channel first"; return; }
  const start = gbTime($("rec-start").value), end = gbTime($("rec-end").value);
  const from = unix(start), to = unix(end);
  if (!(to > from)) { $("rec-note").textContent = "the end must be after the start"; return; }
  $("rec-note").textContent = "searching…";
  let answer;
  try {
    answer = await getJson(`${channelApi("records")}?start=${start}&end=${end}`);
  } catch (e) {
    $("rec-note").textContent = `search: ${e.message}`;
    return;
  }
  const timeline = $("timeline");
  timeline.textContent = "";
  timeline.dataset.start = from;
  timeline.dataset.end = to;
  $("axis-start").textContent = start.replace("T", " ");
  $("axis-end").textContent = end.replace("T", " ");
  for (const rec of answer.records) {
    const rs = unix(rec.start_time), re = unix(rec.end_time);
    if (!(re > rs)) continue;
    const left = Math.max(rs, from), right = Math.min(re, to);
    if (right <= left) continue;
    const bar = document.createElement("div");
    bar.className = "record";
    bar.dataset.start = rec.start_time;
    bar.dataset.end = rec.end_time;
    bar.style.left = `${((left - from) / (to - from)) * 100}%`;
    bar.style.width = `${((right - left) / (to - from)) * 100}%`;
    bar.title = `${rec.name || "record"} ${rec.start_time} – ${rec.end_time}`;
    // Play from the time clicked to the end of this recording.
    bar.onclick = (ev) => {
      ev.stopPropagation();
      const box = bar.getBoundingClientRect();
      const frac = Math.min(Math.max((ev.clientX - box.left) / (box.width || 1), 0), 1);
      const at = Math.floor(left + frac * (right - left));
      document.querySelectorAll("#timeline .record").forEach((e) => e.classList.toggle("playing", e === bar));
      playRange(at, re);
    };
    timeline.append(bar);
  }
  $("rec-note").textContent = `${answer.records.length} recording(s)${answer.partial ? " (partial list)" : ""}`;
}

function playRange(from, to) {
  const { device, channel } = state.selected;
  play(`gb/${device}/${channel}/playback/${from}-${to}`);
}

// ---- trick play of a recording over the WHEP session ----

function showPlayback(from, to) {
  state.playback = { from, to, pos: 0, since: performance.now(), scale: 1, paused: false };
  $("playback").hidden = false;
  $("seek").max = to - from;
  $("seek").value = 0;
  $("pb-speed").value = "1";
  $("pb-pause").textContent = "pause";
  $("pb-note").textContent = "";
}

function position() {
  const pb = state.playback;
  if (!pb) return 0;
  const run = pb.paused ? 0 : ((performance.now() - pb.since) / 1000) * pb.scale;
  return Math.min(pb.pos + run, pb.to - pb.from);
}

function showPosition() {
  const pb = state.playback;
  if (!pb) return;
  const at = position();
  if (document.activeElement !== $("seek")) $("seek").value = Math.floor(at);
  $("pb-pos").textContent = `${gbOf(pb.from + at).replace("T", " ")} (${pb.scale}×${pb.paused ? ", paused" : ""})`;
  $("playback").dataset.position = Math.floor(at);
}

async function playbackCommand(body) {
  if (!state.session || !state.playback) return false;
  try {
    const r = await fetch(`/api/v1/webrtc/sessions/${state.session}/playback`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!r.ok) {
      let msg = `${r.status}`;
      try { msg += ` ${(await r.json()).error}`; } catch (_) {}
      $("pb-note").textContent = `${body.action}: ${msg}`;
      return false;
    }
    $("pb-note").textContent = "";
    // Rebase the position estimate at the moment of the change.
    const pb = state.playback;
    pb.pos = position();
    pb.since = performance.now();
    if (body.action === "pause") pb.paused = true;
    if (body.action === "resume") pb.paused = false;
    if (body.action === "scale") { pb.scale = body.scale; pb.paused = false; }
    if (body.action === "seek") { pb.pos = body.seconds; pb.paused = false; }
    $("pb-pause").textContent = pb.paused ? "resume" : "pause";
    showPosition();
    return true;
  } catch (e) {
    $("pb-note").textContent = e.message;
    return false;
  }
}

// ---- talk: the microphone to the selected channel's speaker ----

async function toggleTalk() {
  if (state.talk) { stopTalk("stopped"); return; }
  if (!state.selected) { $("talk-note").textContent = "select a channel first"; return; }
  const { device, channel } = state.selected;
  const talk = { pc: null, stream: null, resource: null };
  state.talk = talk;
  $("talk").classList.add("active");
  $("talk").textContent = "stop talking";
  $("talk-note").textContent = "asking for the microphone…";
  try {
    // Noise suppression and gain control would reshape what the camera
    // plays; echo cancellation stays (the console may play its audio).
    talk.stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: false, autoGainControl: false },
    });
    const pc = new RTCPeerConnection();
    talk.pc = pc;
    for (const track of talk.stream.getAudioTracks()) pc.addTransceiver(track, { direction: "sendonly", streams: [talk.stream] });
    pc.onconnectionstatechange = () => {
      if (state.talk === talk) $("talk-note").textContent = `talking to ${channel}: ${pc.connectionState}`;
      if (pc.connectionState === "failed" || pc.connectionState === "closed") stopTalk(pc.connectionState);
    };
    await pc.setLocalDescription(await pc.createOffer());
    await waitIceGathering(pc);
    $("talk-note").textContent = "calling the camera…";
    const r = await fetch(`/api/v1/devices/${device}/channels/${channel}/talk/webrtc`, {
      method: "POST", headers: { "Content-Type": "application/sdp" }, body: pc.localDescription.sdp,
    });
    if (state.talk !== talk) {
      if (r.status === 201) fetch(r.headers.get("Location"), { method: "DELETE" }).catch(() => {});
      return;
    }
    if (r.status !== 201) {
      let msg = `${r.status}`;
      try { msg += ` ${(await r.json()).error}`; } catch (_) {}
      stopTalk(`talk refused: ${msg}`);
      return;
    }
    talk.resource = r.headers.get("Location");
    await pc.setRemoteDescription({ type: "answer", sdp: await r.text() });
  } catch (e) {
    if (state.talk === talk) stopTalk(`talk: ${e.message || e}`);
  }
}

function stopTalk(why) {
  const talk = state.talk;
  if (!talk) return;
  state.talk = null;
  if (talk.resource) fetch(talk.resource, { method: "DELETE" }).catch(() => {});
  if (talk.pc) talk.pc.close();
  if (talk.stream) talk.stream.getTracks().forEach((t) => t.stop());
  $("talk").classList.remove("active");
  $("talk").textContent = "talk";
  $("talk-note").textContent = why;
}

async function talkStats() {
  const talk = state.talk;
  if (!talk || !talk.pc) return;
  const stats = await talk.pc.getStats();
  stats.forEach((s) => {
    if (s.type === "outbound-rtp" && s.kind === "audio") $("talk-note").dataset.packetsSent = s.packetsSent || 0;
  });
}

$("talk").onclick = toggleTalk;
setInterval(talkStats, 500);

$("pb-pause").onclick = () => playbackCommand({ action: state.playback && state.playback.paused ? "resume" : "pause" });
$("pb-speed").onchange = () => playbackCommand({ action: "scale", scale: Number($("pb-speed").value) });
$("seek").onchange = () => playbackCommand({ action: "seek", seconds: Number($("seek").value) });
$("rec-search").onclick = searchRecords;
$("preset-set").onclick = () => presetCommand("set", Number($("preset-new").value));
{
  const now = Math.floor(Date.now() / 1000);
  $("rec-start").value = gbOf(now - 86400);
  $("rec-end").value = gbOf(now);
}

$("stop").onclick = stop;
$("dl-start").onclick = startDownload;
setInterval(refreshDownloads, 2000);
window.camgate = { play, stop, state, select, refreshDevices, refreshDownloads, startDownload, ptzCommand, searchRecords, playbackCommand, presetCommand, toggleTalk, stopTalk };
refreshDevices();
refreshStreams();
refreshCascade();
connectEvents();
setInterval(refreshDevices, 10000);
setInterval(refreshStreams, 3000);
setInterval(refreshCascade, 3000);
setInterval(refreshStats, 500);
// `#play={stream key}` opens a stream at once (bookmarks, the `console`
// URL of GET /api/v1/devices, tests); its channel is selected once the
// device list arrives.
const hash = new URLSearchParams(location.hash.slice(1));
if (hash.get("play")) {
  state.wantPlay = hash.get("play");
  play(hash.get("play"));
}
