// Sound on the page without audio files: the ringtone (WebAudio oscillators), the
// microphone level meter (an AnalyserNode) and the device pickers.

let context = null;

// One AudioContext for the page, made on first use. Browsers start it suspended
// until the person has touched the page; `resumeAudio()` from a click wakes it.
export function audioContext() {
  if (!context) context = new AudioContext();
  return context;
}

export function resumeAudio() {
  const ctx = audioContext();
  if (ctx.state === "suspended") ctx.resume().catch(() => {});
}

const RING_ON_S = 2.0;
const RING_OFF_S = 4.0;
const RING_FREQUENCIES = [440, 480]; // The North American ring, two tones summed.
const RING_GAIN = 0.12;

// A telephone ring: two seconds of 440 + 480 Hz, four of silence, until stopped.
export class Ringer {
  constructor() {
    this.nodes = null;
    this.timer = 0;
    this.sinkId = "";
  }

  get ringing() {
    return this.nodes !== null;
  }

  start() {
    if (this.nodes) return;
    const ctx = audioContext();
    const gain = ctx.createGain();
    gain.gain.value = 0;
    gain.connect(ctx.destination);
    const oscillators = RING_FREQUENCIES.map((frequency) => {
      const osc = ctx.createOscillator();
      osc.frequency.value = frequency;
      osc.connect(gain);
      osc.start();
      return osc;
    });
    this.nodes = { gain, oscillators };
    const cycle = () => {
      if (!this.nodes) return;
      const t = ctx.currentTime;
      gain.gain.setValueAtTime(RING_GAIN, t);
      gain.gain.setValueAtTime(0, t + RING_ON_S);
    };
    cycle();
    this.timer = setInterval(cycle, (RING_ON_S + RING_OFF_S) * 1000);
  }

  stop() {
    clearInterval(this.timer);
    if (!this.nodes) return;
    const { gain, oscillators } = this.nodes;
    this.nodes = null;
    oscillators.forEach((osc) => {
      osc.stop();
      osc.disconnect();
    });
    gain.disconnect();
  }

  // Ring on the chosen speaker where the browser lets an AudioContext pick one.
  setSink(sinkId) {
    this.sinkId = sinkId;
    const ctx = audioContext();
    if (typeof ctx.setSinkId === "function") ctx.setSinkId(sinkId || "").catch(() => {});
  }
}

// The microphone's level, 0..1 (RMS of the last frame), drawn into a <meter>
// once per animation frame while a stream is attached.
export class LevelMeter {
  constructor(meter, onLevel) {
    this.meter = meter;
    this.onLevel = onLevel;
    this.source = null;
    this.analyser = null;
    this.samples = null;
    this.frame = 0;
  }

  attach(stream) {
    this.detach();
    const ctx = audioContext();
    this.source = ctx.createMediaStreamSource(stream);
    this.analyser = ctx.createAnalyser();
    this.analyser.fftSize = 1024;
    this.samples = new Float32Array(this.analyser.fftSize);
    this.source.connect(this.analyser);
    const draw = () => {
      this.analyser.getFloatTimeDomainData(this.samples);
      const power = this.samples.reduce((sum, x) => sum + x * x, 0) / this.samples.length;
      const level = Math.min(1, Math.sqrt(power) * 2); // speech peaks near full scale
      this.meter.value = level;
      this.onLevel(level);
      this.frame = requestAnimationFrame(draw);
    };
    this.frame = requestAnimationFrame(draw);
  }

  detach() {
    cancelAnimationFrame(this.frame);
    if (this.source) this.source.disconnect();
    this.source = null;
    this.analyser = null;
    this.meter.value = 0;
    this.onLevel(0);
  }
}

export const canPickSpeaker = typeof HTMLMediaElement !== "undefined"
  && typeof HTMLMediaElement.prototype.setSinkId === "function";

// Fill a <select> with the devices of one kind, keeping the choice when it is
// still there. Labels are empty until the page has had the microphone once.
export function fillDevices(select, devices, kind, fallback) {
  const chosen = select.value;
  const options = [new Option(fallback, "")];
  let n = 0;
  for (const device of devices) {
    if (device.kind !== kind || device.deviceId === "default" || !device.deviceId) continue;
    n += 1;
    options.push(new Option(device.label || `${fallback.split(" ")[1]} ${n}`, device.deviceId));
  }
  select.replaceChildren(...options);
  select.value = options.some((o) => o.value === chosen) ? chosen : "";
}
