// The call page: microphone -> RTCPeerConnection -> offer over the WebSocket, and
// calls from the phone network rung here while "Receive calls" is on.
// Protocol: docs/protocol.md. No build step, no external fetches.

import { LevelMeter, canPickSpeaker, fillDevices, resumeAudio } from "./audio.js";
import { Rings, callerText } from "./incoming.js";
import * as quality from "./quality.js";

const $ = (id) => document.getElementById(id);
const form = $("call-form");
const destinationInput = $("destination");
const startButton = $("start");
const hangupButton = $("hangup");
const statusLine = $("status");
const remoteAudio = $("remote-audio");
const holdButton = $("hold");
const holdState = $("hold-state");
const muteButton = $("mute");
const timer = $("timer");
const keypad = $("keypad");
const keys = Array.from(keypad.querySelectorAll("button[data-digit]"));
const sentDigits = $("dtmf-sent");
const receivedDigits = $("dtmf-received");
const transferNote = $("transfer");
const tokenRow = $("token-row");
const tokenInput = $("token");
const listenButton = $("listen");
const listenState = $("listen-state");
const userRow = $("user-row");
const userInput = $("user");
const micSelect = $("mic-select");
const speakerSelect = $("speaker-select");
const announcer = $("announcer");

const GATHER_TIMEOUT_MS = 2000;
const GATHER_TIMEOUT_TURN_MS = 5000; // A TURN allocation takes a round trip or two more.
const ENDED_WAIT_MS = 8000; // The bridge answers a hang-up within ~5 s.
const RECONNECT_MIN_MS = 1000;
const RECONNECT_MAX_MS = 30000;

// Errors that refuse an offer outright: no call was started, no `ended` follows.
const REFUSALS = new Set([
  "bad_json", "bad_message", "unknown_type", "too_large",
  "bad_destination", "no_destination", "call_in_progress",
  "unauthorized", "forbidden_destination", "rate_limited", "too_many_calls",
]);
// Errors about one in-call request; the call itself carries on.
const IN_CALL_ERRORS = new Set(["hold_failed", "bad_dtmf", "not_connected"]);
const SIP_STATUS = {
  401: "Unauthorized", 403: "Forbidden", 404: "Not found", 407: "Unauthorized",
  408: "No answer", 410: "Gone", 480: "Unavailable", 484: "Incomplete number",
  486: "Busy", 487: "Cancelled", 488: "Not acceptable", 500: "Server error",
  502: "Bad gateway", 503: "Service unavailable", 504: "Timeout",
  600: "Busy", 603: "Declined", 604: "Does not exist",
};
const CAUSES = {
  normal: "Call ended", remote_hangup: "Call ended", browser_gone: "Call ended",
  cancelled: "Call cancelled", timeout: "No answer", rejected: "Call rejected",
  media_failed: "Media failed", media_timeout: "No audio",
  media_shutdown: "Media server stopped", setup_failed: "Call could not be set up",
  internal: "Internal error", max_duration: "Call time limit reached",
  answered_elsewhere: "Answered elsewhere", no_answer: "No answer",
  not_listening: "Not receiving calls", operator: "Ended by the operator",
};
const CLOSE_UNAUTHORIZED = 4401;
const DIGIT_KEYS = new Set("0123456789*#");
const KEY_FLASH_MS = 150;
const STORE_MIC = "bridge.microphone";
const STORE_SPEAKER = "bridge.speaker";
const STORE_USER = "bridge.user";

// Read by automated tests: the current (or last) call's peer connection and the
// page's state.
const bridge = {
  pc: null, ws: null, state: "idle", hold: { local: false, remote: false },
  muted: false, level: 0, listening: false, callId: null, stats: null, quality: null,
  rtcConfig: null,
};
window.bridge = bridge;
Object.defineProperty(window, "bridgeCall", { get: () => bridge.pc });

// The client token: from the URL fragment (#token=…, never sent to a server
// by the browser, and removed from the address bar at once) or the token field.
// It goes on the WebSocket URL and in /config.json's Authorization header only;
// it is never logged.
let token = "";
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("token")) {
  token = fragment.get("token");
  fragment.delete("token");
  const rest = fragment.toString();
  history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
}
// ?relay=1: TURN only (tests, and checking that a TURN server works).
const forceRelay = new URLSearchParams(location.search).get("relay") === "1";

let pageConfig = { auth: false };
let stream = null;
let lastError = "";
let endedTimer = 0;
let timerInterval = 0;
let wantListen = false;
let closeAfterCall = false;
let listenPending = false;
let reconnectTimer = 0;
let reconnectDelay = RECONNECT_MIN_MS;
// Calls this page declined or let go: a late `ended` for one of them changes nothing.
const letGo = new Set();

const meter = new LevelMeter($("mic-level"), (level) => { bridge.level = level; });
const rings = new Rings($, () => bridge.state !== "idle");
bridge.rings = rings;

function currentToken() {
  return tokenInput.value.trim() || token;
}

function storage(key, value) {
  try {
    if (value === undefined) return localStorage.getItem(key) || "";
    localStorage.setItem(key, value);
  } catch {
    // Storage off (private mode, policy): the choice lasts as long as the page.
  }
  return "";
}

// Tell screen readers now; the same text twice is said twice.
function announce(text) {
  announcer.textContent = "";
  setTimeout(() => { announcer.textContent = text; }, 50);
}

function setStatus(text, kind) {
  statusLine.textContent = text;
  statusLine.dataset.kind = kind;
}

function setState(state) {
  bridge.state = state;
  const idle = state === "idle";
  startButton.disabled = !idle;
  destinationInput.disabled = !idle;
  hangupButton.disabled = idle || state === "hangingup";
  const connected = state === "connected";
  holdButton.disabled = !connected;
  muteButton.disabled = idle || state === "hangingup";
  keys.forEach((key) => { key.disabled = !connected; });
  document.body.dataset.call = state;
  rings.show();
}

// What the page says about hold: ours first, the other side's second.
function showHold(local, remote) {
  bridge.hold = { local, remote };
  holdButton.textContent = local ? "Resume" : "Hold";
  holdButton.setAttribute("aria-pressed", String(local));
  const parts = [];
  if (local) parts.push("On hold");
  if (remote) parts.push("Held by the other side");
  holdState.textContent = parts.join(" · ");
  holdState.hidden = parts.length === 0;
}

function setMuted(muted) {
  bridge.muted = muted;
  if (stream) stream.getAudioTracks().forEach((track) => { track.enabled = !muted; });
  muteButton.textContent = muted ? "Unmute" : "Mute";
  muteButton.setAttribute("aria-pressed", String(muted));
}

function toggleMute() {
  if (muteButton.disabled) return;
  setMuted(!bridge.muted);
  announce(bridge.muted ? "Microphone muted" : "Microphone on");
}

function showDuration() {
  const seconds = bridge.connectedAt ? Math.floor((Date.now() - bridge.connectedAt) / 1000) : 0;
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = String(seconds % 60).padStart(2, "0");
  timer.textContent = h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
  timer.dateTime = `PT${seconds}S`;
}

function startTimer() {
  bridge.connectedAt = Date.now();
  clearInterval(timerInterval);
  timerInterval = setInterval(showDuration, 1000);
  showDuration();
}

function resetCallControls() {
  showHold(false, false);
  setMuted(false);
  sentDigits.textContent = "";
  receivedDigits.textContent = "";
  transferNote.hidden = true;
  clearInterval(timerInterval);
  bridge.connectedAt = 0;
  showDuration();
  bridge.stats = null;
  bridge.quality = null;
  quality.clear($);
}

function sendDigit(digit) {
  if (bridge.state !== "connected") return;
  if (!send({ type: "dtmf", digits: digit })) return;
  sentDigits.textContent += digit;
  const key = keys.find((k) => k.dataset.digit === digit);
  if (key) {
    key.classList.add("pressed");
    setTimeout(() => key.classList.remove("pressed"), KEY_FLASH_MS);
  }
}

function toggleHold() {
  if (bridge.state !== "connected") return;
  // The page changes only when `hold_changed` confirms it.
  send({ type: bridge.hold.local ? "unhold" : "hold" });
}

function endedText(msg) {
  if (typeof msg.status === "number" && msg.status >= 300) {
    return `${SIP_STATUS[msg.status] || msg.reason || "Call failed"} (${msg.status})`;
  }
  return CAUSES[msg.cause] || msg.reason || "Call ended";
}

// Release the microphone and the peer connection; the page is idle again.
function release() {
  clearTimeout(endedTimer);
  clearInterval(timerInterval);
  meter.detach();
  if (bridge.pc) bridge.pc.close();
  if (stream) stream.getTracks().forEach((track) => track.stop());
  stream = null;
  remoteAudio.srcObject = null;
  bridge.callId = null;
  setState("idle");
  if (closeAfterCall && bridge.ws) bridge.ws.close(); // "Receive calls" went off in the call.
  closeAfterCall = false;
  if (rings.size) rings.focusAccept();
}

function finish(text) {
  if (lastError) setStatus(`Error: ${lastError}`, "error");
  else setStatus(text, text.startsWith("Error") ? "error" : "idle");
  announce(statusLine.textContent);
  release();
}

function send(msg) {
  if (bridge.ws && bridge.ws.readyState === WebSocket.OPEN) {
    bridge.ws.send(JSON.stringify(msg));
    return true;
  }
  return false;
}

function connect() {
  if (bridge.ws && bridge.ws.readyState === WebSocket.OPEN) return Promise.resolve(bridge.ws);
  if (bridge.ws && bridge.ws.readyState === WebSocket.CONNECTING) return bridge.wsOpen;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const current = currentToken();
  const query = current ? `?token=${encodeURIComponent(current)}` : "";
  const ws = new WebSocket(`${scheme}://${location.host}/ws${query}`);
  bridge.ws = ws;
  ws.onmessage = (event) => onMessage(JSON.parse(event.data));
  ws.onclose = (event) => {
    if (bridge.ws !== ws) return;
    bridge.ws = null;
    bridge.listening = false;
    rings.clear();
    if (event.code === CLOSE_UNAUTHORIZED) {
      tokenRow.hidden = false;
      if (wantListen) stopListening("Not receiving calls: the access token was refused");
    }
    if (bridge.state !== "idle") finish("Error: Connection to the bridge lost");
    if (wantListen) reconnectLater();
  };
  bridge.wsOpen = new Promise((resolve, reject) => {
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error("cannot reach the bridge"));
  });
  return bridge.wsOpen;
}

// ICE servers as /config.json gives them now: TURN credentials are short-lived,
// so each call asks again (with the token: they go only to a token's holder).
async function rtcConfiguration() {
  let servers = [];
  let policy = "all";
  try {
    const current = currentToken();
    const response = await fetch("/config.json", {
      headers: current ? { Authorization: `Bearer ${current}` } : {},
      cache: "no-store",
    });
    const config = await response.json();
    if (Array.isArray(config.ice_servers)) servers = config.ice_servers;
    if (config.ice_transport_policy === "relay") policy = "relay";
  } catch {
    // The bridge's own candidates still work on a plain network.
  }
  const rtc = { iceServers: servers, iceTransportPolicy: forceRelay ? "relay" : policy };
  bridge.rtcConfig = rtc;
  return rtc;
}

function gatheringComplete(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    // Send whatever is there when gathering takes long (an unreachable server).
    const timer = setTimeout(resolve, timeoutMs);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

async function openMicrophone() {
  const deviceId = micSelect.value;
  const audio = deviceId ? { deviceId: { exact: deviceId } } : true;
  try {
    return await navigator.mediaDevices.getUserMedia({ audio });
  } catch (err) {
    if (!deviceId || err.name !== "OverconstrainedError") throw err;
    micSelect.value = ""; // The chosen microphone is gone: take the default.
    return navigator.mediaDevices.getUserMedia({ audio: true });
  }
}

// Microphone, peer connection and offer with its candidates: what `offer` and
// `accept` both carry.
async function prepareOffer() {
  resumeAudio();
  stream = await openMicrophone();
  setMuted(bridge.muted);
  meter.attach(stream);
  refreshDevices();
  const rtc = await rtcConfiguration();
  const pc = new RTCPeerConnection(rtc);
  bridge.pc = pc;
  pc.ontrack = (event) => {
    remoteAudio.srcObject = event.streams[0] || new MediaStream([event.track]);
    remoteAudio.play().catch(() => {});
  };
  stream.getTracks().forEach((track) => pc.addTrack(track, stream));
  await pc.setLocalDescription(await pc.createOffer());
  await gatheringComplete(pc, rtc.iceServers.length ? GATHER_TIMEOUT_TURN_MS : GATHER_TIMEOUT_MS);
  return pc.localDescription.sdp;
}

async function startCall() {
  lastError = "";
  resetCallControls();
  setState("calling");
  setStatus("Calling…", "progress");
  try {
    const sdp = await prepareOffer();
    await connect();
    if (bridge.state !== "calling") return; // Hung up meanwhile.
    send({ type: "offer", sdp, destination: destinationInput.value.trim() });
  } catch (err) {
    finish(`Error: ${err && err.message ? err.message : err}`);
  }
}

async function acceptCall() {
  const ring = rings.first;
  if (!ring || bridge.state !== "idle") return;
  rings.remove(ring.call_id);
  lastError = "";
  resetCallControls();
  bridge.callId = ring.call_id;
  setState("accepting");
  setStatus(`Answering ${callerText(ring)}…`, "progress");
  hangupButton.focus();
  try {
    const sdp = await prepareOffer();
    if (bridge.state !== "accepting" || bridge.callId !== ring.call_id) return; // Ended meanwhile.
    if (!send({ type: "accept", call_id: ring.call_id, sdp })) {
      finish("Error: Connection to the bridge lost");
    }
  } catch (err) {
    send({ type: "reject", call_id: ring.call_id });
    finish(`Error: ${err && err.message ? err.message : err}`);
  }
}

function declineCall() {
  const ring = rings.first;
  if (!ring) return;
  send({ type: "reject", call_id: ring.call_id });
  letGo.add(ring.call_id);
  rings.remove(ring.call_id);
  announce(`Declined the call from ${callerText(ring)}`);
}

function hangUp() {
  if (bridge.state === "idle" || bridge.state === "hangingup") return;
  if (bridge.pc) bridge.pc.close();
  if (!send({ type: "hangup" })) {
    finish("Ended: Call ended");
    return;
  }
  setState("hangingup");
  setStatus("Hanging up…", "progress");
  endedTimer = setTimeout(() => finish("Ended: Call ended"), ENDED_WAIT_MS);
}

// --- Receive calls ---------------------------------------------------------------

function setListenState(text, kind) {
  listenState.textContent = text;
  listenState.dataset.kind = kind;
  listenButton.setAttribute("aria-pressed", String(wantListen));
  listenButton.textContent = wantListen ? "Stop receiving calls" : "Receive calls";
  userInput.disabled = wantListen;
}

async function startListening() {
  resumeAudio(); // A click: the ringtone may sound later without one.
  const user = userInput.value.trim();
  if (!pageConfig.auth && !user) {
    setListenState("Enter the name to receive calls as", "error");
    userInput.focus();
    return;
  }
  if (!pageConfig.auth) storage(STORE_USER, user);
  if (typeof Notification !== "undefined" && Notification.permission === "default") {
    Notification.requestPermission().catch(() => {});
  }
  wantListen = true;
  closeAfterCall = false;
  setListenState("Connecting…", "progress");
  await sendListen();
}

async function sendListen() {
  clearTimeout(reconnectTimer);
  try {
    await connect();
  } catch {
    return; // Its close handler tries again later.
  }
  if (!wantListen) return;
  listenPending = true;
  const msg = { type: "listen" };
  if (!pageConfig.auth) msg.user = userInput.value.trim();
  send(msg);
}

function reconnectLater() {
  if (!wantListen) return;
  setListenState(`Reconnecting in ${Math.round(reconnectDelay / 1000)} s…`, "progress");
  clearTimeout(reconnectTimer);
  reconnectTimer = setTimeout(sendListen, reconnectDelay);
  reconnectDelay = Math.min(reconnectDelay * 2, RECONNECT_MAX_MS);
}

function stopListening(text) {
  wantListen = false;
  listenPending = false;
  bridge.listening = false;
  clearTimeout(reconnectTimer);
  // Ringing calls get a decline; the server forgets a listener when its socket goes.
  for (const callId of Array.from(rings.calls.keys())) {
    send({ type: "reject", call_id: callId });
    letGo.add(callId);
  }
  rings.clear();
  if (bridge.ws && bridge.state === "idle") bridge.ws.close();
  else closeAfterCall = true;
  setListenState(text || "Not receiving calls", text ? "error" : "off");
  announce(text || "Not receiving calls");
}

function onListening(msg) {
  listenPending = false;
  bridge.listening = true;
  reconnectDelay = RECONNECT_MIN_MS;
  const who = typeof msg.user === "string" && msg.user ? msg.user : "you";
  setListenState(`Receiving calls as ${who}`, "ok");
  announce(`Receiving calls as ${who}`);
}

function onIncoming(msg) {
  if (typeof msg.call_id !== "string" || !msg.call_id || rings.has(msg.call_id)) return;
  if (!wantListen) {
    send({ type: "reject", call_id: msg.call_id });
    letGo.add(msg.call_id);
    return;
  }
  const ring = rings.add(msg);
  announce(`Incoming call from ${callerText(ring)}${ring.to ? ` to ${ring.to}` : ""}`);
  if (bridge.state === "idle") rings.focusAccept(); // In a call, focus stays on Hang up.
}

// An `ended` for a call that was only ringing here: cancelled, answered elsewhere…
function onRingEnded(callId, msg) {
  const ring = rings.remove(callId);
  const text = msg.cause === "answered_elsewhere"
    ? `Call from ${callerText(ring)} answered elsewhere`
    : `Missed call from ${callerText(ring)}`;
  announce(text);
  if (bridge.state === "idle") setStatus(text, "idle");
}

// --- Messages from the bridge ----------------------------------------------------

async function onMessage(msg) {
  switch (msg.type) {
    case "answer":
      if (bridge.pc && bridge.pc.signalingState === "have-local-offer") {
        try {
          await bridge.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
        } catch (err) {
          lastError = `Bad answer from the bridge: ${err.message}`;
          hangUp();
        }
      }
      break;
    case "ringing":
      if (bridge.state === "calling" || bridge.state === "ringing") {
        setState("ringing");
        setStatus("Ringing", "progress");
      }
      break;
    case "connected":
      if (bridge.state !== "hangingup" && bridge.state !== "idle") {
        setState("connected");
        setStatus("Connected", "ok");
        announce("Connected");
        startTimer();
      }
      break;
    case "ended":
      if (typeof msg.call_id === "string" && rings.has(msg.call_id)) {
        onRingEnded(msg.call_id, msg);
        break;
      }
      if (typeof msg.call_id === "string" && letGo.has(msg.call_id)) {
        letGo.delete(msg.call_id);
        break;
      }
      if (bridge.state === "idle" && rings.size === 1 && !msg.call_id) {
        onRingEnded(rings.first.call_id, msg);
        break;
      }
      finish(`Ended: ${endedText(msg)}`);
      showHold(false, false);
      break;
    case "listening":
      onListening(msg);
      break;
    case "incoming":
      onIncoming(msg);
      break;
    case "hold_changed":
      showHold(Boolean(msg.local), Boolean(msg.remote));
      break;
    case "dtmf":
      if (typeof msg.digit === "string") receivedDigits.textContent += msg.digit;
      break;
    case "stats": {
      bridge.stats = msg;
      const before = bridge.quality;
      bridge.quality = quality.render(msg, $);
      if (bridge.quality && before && bridge.quality !== before) {
        announce(`Call quality ${quality.LABELS[bridge.quality].toLowerCase()}`);
      }
      break;
    }
    case "transferred":
      transferNote.textContent = `Transferred to ${msg.target}`;
      transferNote.hidden = false;
      break;
    case "error":
      onError(msg);
      break;
    default:
      break;
  }
}

function onError(msg) {
  if (listenPending && bridge.state === "idle" && msg.code !== "no_call") {
    // The bridge refused `listen` (no inbound routing here, a bad user name…).
    stopListening(`Not receiving calls: ${msg.message}`);
    return;
  }
  if (msg.code === "no_call") {
    if (typeof msg.call_id === "string" && rings.has(msg.call_id)) rings.remove(msg.call_id);
    // An accept that came too late; otherwise a hang-up that crossed `ended`.
    if (bridge.state === "accepting") finish("Ended: The call was already over");
    return;
  }
  if (IN_CALL_ERRORS.has(msg.code)) {
    // The call goes on: say so without ending it.
    if (bridge.state === "connected") setStatus(`Connected · ${msg.message}`, "ok");
    return;
  }
  if (REFUSALS.has(msg.code)) {
    lastError = "";
    finish(`Error: ${msg.message}`);
  } else {
    lastError = msg.message; // `ended` follows.
    setStatus(`Error: ${msg.message}`, "error");
  }
}

// --- Devices ----------------------------------------------------------------------

async function refreshDevices() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
  const devices = await navigator.mediaDevices.enumerateDevices();
  fillDevices(micSelect, devices, "audioinput", "Default microphone");
  fillDevices(speakerSelect, devices, "audiooutput", "Default speaker");
  if (!micSelect.value) micSelect.value = storage(STORE_MIC) || "";
  if (!micSelect.value) micSelect.value = "";
  if (!speakerSelect.value) speakerSelect.value = storage(STORE_SPEAKER) || "";
  if (!speakerSelect.value) speakerSelect.value = "";
}

// A new microphone mid-call: its track replaces the old one on the same sender.
async function changeMicrophone() {
  storage(STORE_MIC, micSelect.value);
  if (!stream || !bridge.pc) return;
  try {
    const next = await openMicrophone();
    const track = next.getAudioTracks()[0];
    const sender = bridge.pc.getSenders().find((s) => s.track && s.track.kind === "audio");
    if (sender) await sender.replaceTrack(track);
    stream.getTracks().forEach((t) => t.stop());
    stream = next;
    setMuted(bridge.muted);
    meter.attach(stream);
    announce("Microphone changed");
  } catch (err) {
    setStatus(`${statusLine.textContent} · microphone: ${err.message}`, statusLine.dataset.kind);
  }
}

function changeSpeaker() {
  const sinkId = speakerSelect.value;
  storage(STORE_SPEAKER, sinkId);
  if (canPickSpeaker) remoteAudio.setSinkId(sinkId).catch(() => {});
  rings.ringer.setSink(sinkId);
}

// --- Wiring -------------------------------------------------------------------------

form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (bridge.state === "idle") startCall();
});
hangupButton.addEventListener("click", hangUp);
holdButton.addEventListener("click", toggleHold);
muteButton.addEventListener("click", toggleMute);
$("accept").addEventListener("click", acceptCall);
$("decline").addEventListener("click", declineCall);
$("incoming").addEventListener("keydown", (event) => {
  if (event.key === "Escape") {
    event.preventDefault();
    declineCall();
  }
});
listenButton.addEventListener("click", () => {
  if (wantListen) stopListening();
  else startListening();
});
keys.forEach((key) => key.addEventListener("click", () => sendDigit(key.dataset.digit)));
micSelect.addEventListener("change", changeMicrophone);
speakerSelect.addEventListener("change", changeSpeaker);
$("speaker-row").hidden = !canPickSpeaker;
if (navigator.mediaDevices) navigator.mediaDevices.addEventListener("devicechange", refreshDevices);
document.addEventListener("keydown", (event) => {
  // Typing digits dials them while connected, unless a form field has the focus.
  if (bridge.state !== "connected" || event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (target instanceof HTMLInputElement || target instanceof HTMLSelectElement) return;
  if (DIGIT_KEYS.has(event.key)) {
    event.preventDefault();
    sendDigit(event.key);
  }
});
window.addEventListener("beforeunload", (event) => {
  if (bridge.state !== "idle") event.preventDefault(); // Leaving ends the call.
});

userInput.value = storage(STORE_USER);
refreshDevices().catch(() => {});
fetch("/config.json", { cache: "no-store" })
  .then((response) => response.json())
  .then((config) => {
    pageConfig = config;
    if (config.default_destination && !destinationInput.value) {
      destinationInput.value = config.default_destination;
    }
    $("demo-note").hidden = !config.demo;
    // A token field only where tokens are required and none came with the URL.
    tokenRow.hidden = !(config.auth && !token);
    // Without tokens the person names who they receive calls as.
    userRow.hidden = Boolean(config.auth);
  })
  .catch(() => {});

setState("idle");
setListenState("Not receiving calls", "off");
