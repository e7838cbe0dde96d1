// Calls ringing at this page: who calls, the panel that shows the first of them,
// the ringtone, and a desktop notification when the page is out of sight.

import { Ringer } from "./audio.js";

const NOTIFY_ICON = "data:,";

export function callerText(ring) {
  const name = ring.from_name ? String(ring.from_name) : "";
  const number = ring.from ? String(ring.from) : "Unknown number";
  return name ? `${name} (${number})` : number;
}

export class Rings {
  // `$` finds elements by id; `busy()` says whether the page is in a call.
  constructor($, busy) {
    this.$ = $;
    this.busy = busy;
    this.calls = new Map(); // call_id -> {from, from_name, to, notification}
    this.ringer = new Ringer();
  }

  get size() {
    return this.calls.size;
  }

  // The call the panel shows (the oldest still ringing), or null.
  get first() {
    const next = this.calls.entries().next();
    return next.done ? null : { call_id: next.value[0], ...next.value[1] };
  }

  has(callId) {
    return this.calls.has(callId);
  }

  add(msg) {
    const ring = {
      from: typeof msg.from === "string" ? msg.from : "",
      from_name: typeof msg.from_name === "string" ? msg.from_name : "",
      to: typeof msg.to === "string" ? msg.to : "",
      notification: null,
    };
    this.calls.set(msg.call_id, ring);
    ring.notification = notify(ring, msg.call_id, () => this.focusAccept());
    this.show();
    return ring;
  }

  // Forget a ring (answered, declined, ended); returns it, or null.
  remove(callId) {
    const ring = this.calls.get(callId);
    if (!ring) return null;
    this.calls.delete(callId);
    if (ring.notification) ring.notification.close();
    this.show();
    return ring;
  }

  clear() {
    for (const callId of Array.from(this.calls.keys())) this.remove(callId);
  }

  // The panel, the ringtone and the Accept button as the rings and the page's call say.
  show() {
    const $ = this.$;
    const ring = this.first;
    const panel = $("incoming");
    const hadFocus = panel.contains(document.activeElement);
    panel.hidden = ring === null;
    if (ring === null) {
      this.ringer.stop();
      if (hadFocus) $("listen").focus();
      return;
    }
    $("incoming-name").textContent = ring.from_name;
    $("incoming-from").textContent = ring.from || "Unknown number";
    $("incoming-to").textContent = ring.to || "–";
    const more = this.calls.size - 1;
    $("incoming-more").hidden = more === 0;
    $("incoming-more").textContent = more === 1 ? "1 more call waiting" : `${more} more calls waiting`;
    const busy = this.busy();
    $("accept").disabled = busy;
    $("incoming-busy").hidden = !busy;
    // Ring aloud only when the person is free to answer; in a call the panel is enough.
    if (busy) this.ringer.stop();
    else this.ringer.start();
  }

  focusAccept() {
    window.focus();
    const accept = this.$("accept");
    if (!accept.disabled && !this.$("incoming").hidden) accept.focus();
    else this.$("decline").focus();
  }
}

// A desktop notification for a ring, when permitted and the page is not in view.
function notify(ring, callId, onClick) {
  if (typeof Notification === "undefined" || Notification.permission !== "granted") return null;
  if (document.visibilityState === "visible" && document.hasFocus()) return null;
  try {
    const note = new Notification("Incoming call", {
      body: `${callerText(ring)}${ring.to ? ` to ${ring.to}` : ""}`,
      tag: `call-${callId}`,
      requireInteraction: true,
      icon: NOTIFY_ICON,
    });
    note.onclick = () => {
      note.close();
      onClick();
    };
    return note;
  } catch {
    return null; // Some browsers allow notifications only from a service worker.
  }
}
