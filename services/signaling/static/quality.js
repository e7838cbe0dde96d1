// Live call quality from the bridge's `stats` message (docs/protocol.md): one word
// for the person (good/fair/poor), the numbers on demand.

// The E-model's MOS bands (ITU-T G.107): from 4.0 users are satisfied, under 3.6
// many are not. Loss above 3 % or jitter above 50 ms is heard whatever the MOS.
const GOOD_MOS = 4.0;
const FAIR_MOS = 3.6;
const POOR_LOSS = 0.03;
const POOR_JITTER_MS = 50;

function legGrade(leg) {
  if (!leg || typeof leg.mos !== "number") return null;
  if (leg.mos < FAIR_MOS || leg.loss > POOR_LOSS || leg.jitter_ms > POOR_JITTER_MS) {
    return "poor";
  }
  return leg.mos >= GOOD_MOS ? "good" : "fair";
}

const ORDER = ["good", "fair", "poor"];

// The call's grade: its worse leg's; null before any leg has a MOS.
export function grade(stats) {
  const grades = [legGrade(stats.browser), legGrade(stats.trunk)].filter(Boolean);
  if (grades.length === 0) return null;
  return grades.reduce((worst, g) => (ORDER.indexOf(g) > ORDER.indexOf(worst) ? g : worst));
}

const LABELS = { good: "Good", fair: "Fair", poor: "Poor" };

function fmt(value, digits, unit) {
  return typeof value === "number" ? `${value.toFixed(digits)}${unit}` : "–";
}

// Show `stats` in the elements found with `$`; returns the grade.
export function render(stats, $) {
  const g = grade(stats);
  $("quality").dataset.grade = g || "none";
  $("quality-grade").textContent = g ? LABELS[g] : "–";
  for (const side of ["browser", "trunk"]) {
    const leg = stats[side] || {};
    $(`q-${side}-codec`).textContent = leg.codec || "–";
    $(`q-${side}-mos`).textContent = fmt(leg.mos, 1, "");
    $(`q-${side}-loss`).textContent = typeof leg.loss === "number" ? fmt(leg.loss * 100, 1, " %") : "–";
    $(`q-${side}-jitter`).textContent = fmt(leg.jitter_ms, 1, " ms");
    $(`q-${side}-rtt`).textContent = fmt(leg.rtt_ms, 0, " ms");
  }
  $("q-path").textContent = stats.passthrough
    ? "Audio relayed as it is (same codec on both sides)."
    : "Audio converted between codecs.";
  return g;
}

export function clear($) {
  $("quality").dataset.grade = "none";
  $("quality-grade").textContent = "–";
  for (const side of ["browser", "trunk"]) {
    for (const what of ["codec", "mos", "loss", "jitter", "rtt"]) $(`q-${side}-${what}`).textContent = "–";
  }
  $("q-path").textContent = "–";
}

export { LABELS };
