// The live panel: polls GET /estado (one short request at a time) and draws what it says.
// No framework and no build step; the charts are drawn on <canvas> by hand.
"use strict";

const POLL_MS = 400; // at least twice a second
const TEXTS = JSON.parse(document.getElementById("texts").textContent);
const t = (msgid) => TEXTS[msgid] || msgid;
const KINDS = ["Contenido", "Tarea", "Pregunta Dificil"];
const ANSWERERS = ["Docencio", "Tareo", "Profesor"];
const $ = (id) => document.getElementById(id);

function setText(id, value) {
  const el = $(id);
  const text = value === undefined || value === null ? "–" : String(value);
  if (el.textContent !== text) el.textContent = text;
}

function humanBytes(n) {
  if (typeof n !== "number") return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

function fillCounts(tableId, order, counts) {
  const body = $(tableId).tBodies[0];
  const names = [...order, ...Object.keys(counts || {}).filter((k) => !order.includes(k)).sort()];
  const rows = names.map((name) => [name, (counts || {})[name] || 0]);
  const html = rows.map(() => "<tr><th></th><td></td></tr>").join("");
  if (body.rows.length !== rows.length) body.innerHTML = html;
  rows.forEach(([name, n], i) => {
    body.rows[i].cells[0].textContent = name;
    body.rows[i].cells[1].textContent = String(n);
  });
}

function showRole(name, info) {
  const card = $(`role-${name}`);
  const up = Boolean(info && info.up);
  card.dataset.up = String(up);
  card.querySelector(".state").textContent = up ? t("up") : t("down");
  let age = "";
  if (name !== "profesor") {
    age = info && info.age !== null && info.age !== undefined
      ? t("last report {age} s ago").replace("{age}", info.age.toFixed(1))
      : t("no report yet");
  }
  card.querySelector(".age").textContent = age;
}

function drawChart(canvas, times, series, unit) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const left = 48, right = 8, top = 8, bottom = 22;
  const plotW = width - left - right, plotH = height - top - bottom;
  // Finite values only: a reported number that overflows (1e306 s in ms) must not reach
  // the tick loop below, which would never end and freeze the page.
  const values = series.flatMap((s) => s.values.filter(Number.isFinite));
  let max = Math.max(1e-9, ...values);
  const step = niceStep(max / 4);
  if (!(Number.isFinite(step) && step > 0)) return;
  max = Math.ceil(max / step) * step || 1;
  const style = getComputedStyle(document.documentElement);
  ctx.font = "12px system-ui, sans-serif";
  ctx.fillStyle = style.getPropertyValue("--muted");
  ctx.strokeStyle = style.getPropertyValue("--line");
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let v = 0; v <= max + step / 2; v += step) {
    const y = top + plotH - (v / max) * plotH;
    ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + plotW, y); ctx.stroke();
    ctx.fillText(formatTick(v, step) + unit, left - 4, y);
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (const s of [-60, -45, -30, -15, 0]) {
    ctx.fillText(`${s} s`, left + plotW * (1 + s / 60), top + plotH + 4);
  }
  if (!values.length) {
    ctx.fillText(t("no data yet"), left + plotW / 2, top + plotH / 2);
    return;
  }
  for (const s of series) {
    ctx.strokeStyle = style.getPropertyValue(s.color);
    ctx.lineWidth = 2;
    ctx.beginPath();
    let drawing = false;
    times.forEach((when, i) => {
      const v = s.values[i];
      if (!Number.isFinite(v) || when < -60) { drawing = false; return; }
      const x = left + plotW * (1 + when / 60);
      const y = top + plotH - (v / max) * plotH;
      if (drawing) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      drawing = true;
    });
    ctx.stroke();
  }
}

function niceStep(raw) {
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 5, 10]) if (raw <= m * power) return m * power;
  return 10 * power;
}

function formatTick(v, step) {
  return step >= 1 ? String(Math.round(v)) : v.toFixed(Math.min(3, -Math.floor(Math.log10(step))));
}

function show(state) {
  const count = $("count");
  count.dataset.count = String(state.count);
  setText("count", state.count);
  for (const name of ["profesor", "docencio", "tareo"]) showRole(name, state.roles[name]);
  const doc = state.roles.docencio.report || {};
  const tareo = state.roles.tareo.report || {};
  fillCounts("by-kind", KINDS, doc.by_kind);
  fillCounts("by-por", ANSWERERS, doc.by_por);
  const wire = doc.wire || tareo.wire || {};
  setText("students", doc.students);
  setText("codec", wire.codec);
  setText("encoding", wire.encoding);
  setText("chunk", wire.chunk_size === undefined ? undefined
    : wire.chunk_size ? `${wire.chunk_size} B` : t("unchunked"));
  setText("errors", doc.errors);
  setText("reconnects", doc.reconnects);
  setText("late", doc.late);
  setText("in-flight", tareo.in_flight);
  const links = doc.links || {};
  const tlinks = tareo.links || {};
  for (const [id, link] of [["students", links.estudiantes], ["tareo", links.tareo],
                            ["docencio", tlinks.docencio]]) {
    setText(`link-${id}-sent`, link ? humanBytes(link.sent) : undefined);
    setText(`link-${id}-received`, link ? humanBytes(link.received) : undefined);
  }
  const h = state.history;
  drawChart($("chart-rate"), h.t, [{ values: h.rate, color: "--rate" }], "");
  const ms = (xs) => xs.map((v) => (typeof v === "number" ? v * 1000 : null));
  drawChart($("chart-latency"), h.t, [
    { values: ms(h.p50), color: "--p50" },
    { values: ms(h.p95), color: "--p95" },
    { values: ms(h.p99), color: "--p99" },
  ], "");
  const updated = $("updated");
  updated.dataset.state = "live";
  updated.textContent = t("Updated {time}").replace(
    "{time}", new Date(state.time * 1000).toLocaleTimeString(document.documentElement.lang));
}

function lost() {
  const updated = $("updated");
  updated.dataset.state = "lost";
  updated.textContent = t("The Profesor does not answer");
  showRole("profesor", { up: false });
}

async function poll() {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), 2000);
  try {
    const response = await fetch("/estado", { cache: "no-store", signal: abort.signal });
    if (!response.ok) throw new Error(`GET /estado: ${response.status}`);
    show(await response.json());
  } catch (err) {
    lost();
  } finally {
    clearTimeout(timer);
    setTimeout(poll, POLL_MS);
  }
}

poll();
