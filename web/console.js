// camgate console: plain DOM, no framework. WHEP player per
// draft-ietf-wish-whep: POST the offer, wait for ICE gathering, DELETE the
// Location on stop.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { pc: null, resource: null, playing: null };

async function getJson(path) {
  const r = await fetch(path);
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

async function refreshDevices() {
  let devices;
  try {
    devices = await getJson("/api/v1/devices");
  } catch (e) {
    $("devices").innerHTML = `<li class="note">${e.message}</li>`;
    return;
  }
  const list = $("devices");
  list.textContent = "";
  if (devices.length === 0) list.innerHTML = '<li class="note">no device registered yet</li>';
  for (const d of devices) {
    const li = document.createElement("li");
    li.className = "device";
    li.innerHTML = `<span><i class="dot ${d.online ? "on" : ""}"></i></span>`;
    li.querySelector("span").append(d.name || d.id);
    li.title = `${d.id} ${d.manufacturer || ""} ${d.model || ""} via ${d.transport} ${d.address}`;
    const channels = document.createElement("ul");
    li.append(channels);
    list.append(li);
    getJson(`/api/v1/devices/${d.id}/channels`).then((chs) => {
      for (const c of chs) {
        const cl = document.createElement("li");
        cl.className = "channel";
        const path = `gb/${d.id}/${c.id}`;
        cl.dataset.path = path;
        cl.innerHTML = `<i class="dot ${c.online ? "on" : ""}"></i>`;
        cl.append(c.name || c.id);
        cl.title = c.id;
        if (state.playing === path) cl.classList.add("playing");
        cl.onclick = () => play(path);
        channels.append(cl);
      }
    }).catch(() => {});
  }
}

async function refreshStreams() {
  try {
    const streams = await getJson("/api/v1/streams");
    $("streams").innerHTML = streams.map((s) =>
      `<tr><td>${s.key}</td><td>${s.state}</td><td>${s.viewers}</td><td>${Math.round(s.bitrate_bps / 1000)}</td></tr>`
    ).join("") || '<tr><td class="note" colspan="4">none</td></tr>';
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
  state.pc = null; state.resource = null; state.playing = null;
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
  const r = await fetch(`/whep/${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/sdp" },
    body: pc.localDescription.sdp,
  });
  if (r.status !== 201) {
    let msg = `${r.status}`;
    try { msg += ` ${(await r.json()).error}`; } catch (_) {}
    $("now-playing").textContent = `${path}: ${msg}`;
    return;
  }
  state.resource = new URL(r.headers.get("Location"), location.href).toString();
  await pc.setRemoteDescription({ type: "answer", sdp: await r.text() });
  $("stop").hidden = false;
}

// Stats shown under the video and mirrored in the page title and
// data-* attributes, so automated checks can read them.
async function refreshStats() {
  const pc = state.pc;
  const el = $("stats");
  if (!pc) { el.textContent = ""; return; }
  const stats = await pc.getStats();
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
  el.dataset.videoWidth = v.videoWidth;
  el.dataset.audioPackets = audioPackets;
  el.dataset.audioCodec = audioCodec;
  el.textContent = `${v.videoWidth}×${v.videoHeight} · ${frames} frames decoded · ${packets} video packets · ${audioPackets} audio packets ${audioCodec} · ${codec}`;
  document.title = `camgate frames=${frames} width=${v.videoWidth}`;
}

function ptzCommand(action) {
  if (!state.playing) { $("ptz-note").textContent = "play a channel first"; return; }
  const [, device, channel] = state.playing.split("/");
  const speed = Number($("ptz-speed").value);
  fetch(`/api/v1/devices/${device}/channels/${channel}/ptz`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ action, speed }),
  }).then((r) => {
    $("ptz-note").textContent = r.status === 404 || r.status === 405
      ? "PTZ is not available on this gateway"
      : (r.ok ? `${action}` : `PTZ ${action}: ${r.status}`);
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
    const es = new EventSource("/api/v1/events/stream");
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

$("stop").onclick = stop;
window.camgate = { play, stop, state };
refreshDevices();
refreshStreams();
connectEvents();
setInterval(refreshDevices, 10000);
setInterval(refreshStreams, 3000);
setInterval(refreshStats, 500);
// `#play=gb/{device}/{channel}` opens a stream at once (bookmarks, tests).
const hash = new URLSearchParams(location.hash.slice(1));
if (hash.get("play")) play(hash.get("play"));
