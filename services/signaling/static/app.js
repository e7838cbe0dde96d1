// The call page: microphone -> RTCPeerConnection -> offer over the WebSocket.
// Protocol: docs/protocol.md. No build step, no external fetches.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("call-form");
  const destinationInput = $("destination");
  const startButton = $("start");
  const hangupButton = $("hangup");
  const statusLine = $("status");
  const remoteAudio = $("remote-audio");
  const holdButton = $("hold");
  const holdState = $("hold-state");
  const keypad = $("keypad");
  const keys = Array.from(keypad.querySelectorAll("button[data-digit]"));
  const sentDigits = $("dtmf-sent");
  const receivedDigits = $("dtmf-received");
  const transferNote = $("transfer");
  const tokenRow = $("token-row");
  const tokenInput = $("token");

  const GATHER_TIMEOUT_MS = 2000;
  const ENDED_WAIT_MS = 8000; // The bridge answers a hang-up within ~5 s.

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
  };
  const CLOSE_UNAUTHORIZED = 4401;
  const DIGIT_KEYS = new Set("0123456789*#");
  const KEY_FLASH_MS = 150;

  // Read by automated tests: the current (or last) call's peer connection.
  const bridge = { pc: null, ws: null, state: "idle", hold: { local: false, remote: false } };
  window.bridge = bridge;
  Object.defineProperty(window, "bridgeCall", { get: () => bridge.pc });

  // The client token: from the URL fragment (#token=…, never sent to a server
  // by the browser, and removed from the address bar at once) or the token field.
  // It goes on the WebSocket URL only; it is never logged.
  let token = "";
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    token = fragment.get("token");
    fragment.delete("token");
    const rest = fragment.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
  }

  let stream = null;
  let lastError = "";
  let endedTimer = 0;

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
    keys.forEach((key) => { key.disabled = !connected; });
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

  function resetCallControls() {
    showHold(false, false);
    sentDigits.textContent = "";
    receivedDigits.textContent = "";
    transferNote.hidden = true;
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
    if (bridge.pc) bridge.pc.close();
    if (stream) stream.getTracks().forEach((track) => track.stop());
    stream = null;
    remoteAudio.srcObject = null;
    setState("idle");
  }

  function finish(text) {
    if (lastError) setStatus(`Error: ${lastError}`, "error");
    else setStatus(text, text.startsWith("Error") ? "error" : "idle");
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
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const current = tokenInput.value.trim() || token;
    const query = current ? `?token=${encodeURIComponent(current)}` : "";
    const ws = new WebSocket(`${scheme}://${location.host}/ws${query}`);
    bridge.ws = ws;
    ws.onmessage = (event) => onMessage(JSON.parse(event.data));
    ws.onclose = (event) => {
      if (bridge.ws === ws) bridge.ws = null;
      if (event.code === CLOSE_UNAUTHORIZED) tokenRow.hidden = false;
      if (bridge.state !== "idle") finish("Error: Connection to the bridge lost");
    };
    return new Promise((resolve, reject) => {
      ws.onopen = () => resolve(ws);
      ws.onerror = () => reject(new Error("cannot reach the bridge"));
    });
  }

  function gatheringComplete(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      // Without ICE servers gathering is quick; send whatever is there after 2 s.
      const timer = setTimeout(resolve, GATHER_TIMEOUT_MS);
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  }

  async function startCall() {
    lastError = "";
    resetCallControls();
    setState("calling");
    setStatus("Calling…", "progress");
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      const pc = new RTCPeerConnection({ iceServers: [] });
      bridge.pc = pc;
      pc.ontrack = (event) => {
        remoteAudio.srcObject = event.streams[0] || new MediaStream([event.track]);
        remoteAudio.play().catch(() => {});
      };
      stream.getTracks().forEach((track) => pc.addTrack(track, stream));
      await pc.setLocalDescription(await pc.createOffer());
      await gatheringComplete(pc);
      await connect();
      if (bridge.state !== "calling") return; // Hung up meanwhile.
      send({
        type: "offer",
        sdp: pc.localDescription.sdp,
        destination: destinationInput.value.trim(),
      });
    } catch (err) {
      finish(`Error: ${err && err.message ? err.message : err}`);
    }
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
        if (bridge.state !== "hangingup") {
          setState("connected");
          setStatus("Connected", "ok");
        }
        break;
      case "ended":
        finish(`Ended: ${endedText(msg)}`);
        showHold(false, false);
        break;
      case "hold_changed":
        showHold(Boolean(msg.local), Boolean(msg.remote));
        break;
      case "dtmf":
        if (typeof msg.digit === "string") receivedDigits.textContent += msg.digit;
        break;
      case "stats":
        bridge.stats = msg; // the call's quality, for whoever shows it
        break;
      case "transferred":
        transferNote.textContent = `Transferred to ${msg.target}`;
        transferNote.hidden = false;
        break;
      case "error":
        if (msg.code === "no_call") break; // A hang-up that crossed `ended`.
        if (IN_CALL_ERRORS.has(msg.code)) {
          // The call goes on: say so without ending it.
          if (bridge.state === "connected") setStatus(`Connected · ${msg.message}`, "ok");
          break;
        }
        if (REFUSALS.has(msg.code)) {
          lastError = "";
          finish(`Error: ${msg.message}`);
        } else {
          lastError = msg.message; // `ended` follows.
          setStatus(`Error: ${msg.message}`, "error");
        }
        break;
      default:
        break;
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (bridge.state === "idle") startCall();
  });
  hangupButton.addEventListener("click", hangUp);
  holdButton.addEventListener("click", toggleHold);
  keys.forEach((key) => key.addEventListener("click", () => sendDigit(key.dataset.digit)));
  document.addEventListener("keydown", (event) => {
    // Typing digits dials them while connected, unless a text field has the focus.
    if (bridge.state !== "connected" || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target instanceof HTMLInputElement) return;
    if (DIGIT_KEYS.has(event.key)) {
      event.preventDefault();
      sendDigit(event.key);
    }
  });

  fetch("/config.json")
    .then((response) => response.json())
    .then((config) => {
      if (config.default_destination && !destinationInput.value) {
        destinationInput.value = config.default_destination;
      }
      $("demo-note").hidden = !config.demo;
      // A token field only where tokens are required and none came with the URL.
      tokenRow.hidden = !(config.auth && !token);
    })
    .catch(() => {});

  setState("idle");
})();
