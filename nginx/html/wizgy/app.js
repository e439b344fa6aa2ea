// The live view: polls the status listener once a second and draws what it says.
// Data handling lives in data.js (unit-tested with node); this file is the DOM and
// the <canvas> charts, nothing else.

import {
  createStore, formatDuration, hostNames, ingest, isStale, niceMax, pickHost,
  processRows, series, statusUrl, totals,
} from "./data.js";

const POLL_MS = 1000;
const TIMEOUT_MS = 2500;
const url = statusUrl(location.search);
const store = createStore();
let wanted = new URLSearchParams(location.search).get("host"); // the replica asked for
let selected = null; // the replica shown: the one wanted once it has answered
let lastError = null;

const COLORS = { blue: "#1f5fbf", red: "#c62828", green: "#2e7d32", orange: "#e65100",
  purple: "#6a1b9a", grey: "#555" };
const CHARTS = [
  { id: "processes", title: "Processes", lines: [["processes", "processes", COLORS.blue]] },
  { id: "zombies", title: "Zombies", lines: [["zombies", "zombies (state Z)", COLORS.red]] },
  { id: "fds", title: "Open descriptors", limit: "nofile_limit",
    lines: [["open_fds", "main process", COLORS.blue], ["open_fds_max", "busiest process", COLORS.orange]] },
  { id: "connections", title: "Connections",
    lines: [["active", "active", COLORS.green], ["idle", "idle (keep-alive)", COLORS.purple]] },
  { id: "rps", title: "Requests / s", lines: [["rps", "requests/s", COLORS.blue]] },
  { id: "errors", title: "Errors (% of requests)", percent: true,
    lines: [["errors_5xx", "5xx (server)", COLORS.red], ["errors_4xx", "4xx (client)", COLORS.orange]] },
  { id: "cpu", title: "CPU (% of one core)", percent: true, minTop: 100,
    lines: [["cpu_workers", "per worker", COLORS.green], ["cpu_busiest", "busiest process", COLORS.purple]] },
];

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function poll() {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
  try {
    const response = await fetch(url, { cache: "no-store", signal: controller.signal });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    ingest(store, await response.json(), Date.now());
    lastError = null;
  } catch (error) {
    lastError = `${url}: ${error.name === "AbortError" ? "no answer" : error.message}`;
  } finally {
    clearTimeout(timer);
  }
  render();
  setTimeout(poll, POLL_MS);
}

function render() {
  const now = Date.now();
  selected = pickHost(store, wanted);
  $("error").textContent = lastError || "";
  $("error").hidden = !lastError;
  renderHosts(now);
  const host = selected && store.hosts.get(selected);
  if (!host) return;
  const report = host.last;
  $("model").textContent = report.model;
  $("runtime").textContent = report.runtime || "?"; // a server before /status had it
  $("lesson").textContent = report.lesson || "none";
  $("lesson").classList.toggle("lesson-on", Boolean(report.lesson));
  $("app").textContent = report.app;
  $("pid").textContent = `${report.role} ${report.pid}`;
  $("uptime").textContent = formatDuration(report.uptime_seconds);
  $("host").textContent = host.name + (isStale(host, now) ? " (not answering)" : "");
  renderNumbers(report, host.samples.at(-1));
  renderTable(report);
  for (const chart of CHARTS) drawChart(chart, host.samples, now, store.windowMs);
  renderEvents(host.events);
}

// The replica picker and, beside it, the sum over every replica answering.
function renderHosts(now) {
  const names = hostNames(store);
  const box = $("hosts");
  box.hidden = names.length === 0;
  const buttons = names.length < 2 ? [] : [el("span", { class: "label" }, "replica"),
    ...names.map((name) => {
      const button = el("button", { type: "button" }, name);
      if (name === selected) button.classList.add("selected");
      if (isStale(store.hosts.get(name), now)) button.classList.add("stale");
      button.addEventListener("click", () => { wanted = name; render(); });
      return button;
    })];
  const sum = totals(store, now);
  const cells = [
    ["children", sum.children],
    ["zombies", sum.zombies, sum.zombies > 0 ? "bad" : ""],
    ["req/s", sum.rps.toFixed(1)],
    ["4xx/s", sum.errors_4xx.toFixed(1)],
    ["5xx/s", sum.errors_5xx.toFixed(1), sum.errors_5xx > 0 ? "bad" : ""],
    ["worker CPU", sum.cpu_workers == null ? "…" : `${Math.round(sum.cpu_workers * 100)}%`],
  ];
  const total = el("div", { id: "totals", class: "totals" },
    el("span", { class: "label" }, `all ${sum.replicas} replica${sum.replicas === 1 ? "" : "s"}`),
    ...cells.map(([label, value, cls]) => el("span", { class: `total ${cls || ""}` },
      el("b", { "data-key": label }, String(value)), ` ${label}`)));
  box.replaceChildren(...buttons, total);
}

function renderNumbers(report, sample) {
  const numbers = [
    ["children", report.children],
    ["zombies", report.zombies, report.zombies > 0 ? "bad" : ""],
    ["open fds", `${report.open_fds} / ${report.nofile_limit ?? "∞"}`,
      report.nofile_limit && report.open_fds_max > 0.8 * report.nofile_limit ? "bad" : ""],
    ["requests", report.requests_total],
    ["req/s", sample && sample.rps != null ? sample.rps.toFixed(1) : "…"],
    ["4xx / 5xx", `${report.responses_4xx} / ${report.responses_5xx}`],
    ["worker CPU", sample && sample.cpu_workers != null ? `${Math.round(sample.cpu_workers * 100)}%` : "…"],
    ["active / idle", `${report.connections_active} / ${report.connections_idle}`],
    ["fork failures", report.fork_failures, report.fork_failures > 0 ? "bad" : ""],
    ["EMFILE", report.emfile_events, report.emfile_events > 0 ? "bad" : ""],
    ["nproc limit", report.nproc_limit ?? "∞"],
  ];
  $("numbers").replaceChildren(...numbers.map(([label, value, cls]) =>
    el("div", { class: `number ${cls || ""}` }, el("b", { "data-key": label }, String(value)),
      el("span", {}, label))));
}

function renderTable(report) {
  const rows = processRows(report);
  const shown = rows.slice(0, 40);
  $("processes").replaceChildren(...shown.map((row) => {
    const tr = el("tr", { class: row.zombie ? "zombie" : "", "data-pid": row.pid },
      el("td", {}, String(row.pid)), el("td", {}, row.role),
      el("td", { class: "state" }, row.zombie ? "Z" : row.state),
      el("td", { class: row.fdShare > 0.8 ? "bad" : "" }, row.fds),
      el("td", {}, row.rss), el("td", {}, String(row.requests)));
    return tr;
  }));
  $("more").textContent = rows.length > shown.length ?
    `… and ${rows.length - shown.length} more processes` : "";
}

function renderEvents(events) {
  $("events").replaceChildren(...events.slice(-30).reverse().map((e) => {
    const { time, pid, event, ...rest } = e;
    const extra = Object.entries(rest).map(([k, v]) => `${k}=${v}`).join(" ");
    return el("li", {}, el("time", {}, new Date(time * 1000).toLocaleTimeString()),
      ` ${event}`, el("span", { class: "pid" }, ` pid ${pid}${extra ? " " + extra : ""}`));
  }));
}

// A line chart on a canvas: time on x (the last windowMs), values on y from 0.
function drawChart(chart, samples, now, windowMs) {
  const canvas = $(`chart-${chart.id}`);
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  const pad = { left: 56, right: 22, top: 10, bottom: 24 };
  const plotW = width - pad.left - pad.right, plotH = height - pad.top - pad.bottom;
  const scale = chart.percent ? (v) => v * 100 : (v) => v;
  const lines = chart.lines.map(([key, label, color]) =>
    ({ label, color, points: series(samples, key).map(([t, v]) => [t, scale(v)]) }));
  const values = lines.flatMap((line) => line.points.map(([, v]) => v));
  const dataMax = niceMax(values);
  const limit = chart.limit ? samples.at(-1)?.[chart.limit] : null;
  const limitOnScale = limit != null && limit <= 20 * dataMax;
  const top = chart.percent ? Math.max(niceMax(values), chart.minTop ?? 1) : niceMax(limitOnScale ? [...values, limit] : values);
  const x = (t) => pad.left + plotW * (1 - (now - t) / windowMs);
  const y = (v) => pad.top + plotH * (1 - v / top);

  g.font = "14px system-ui, sans-serif";
  g.strokeStyle = "#ddd";
  g.fillStyle = COLORS.grey;
  g.lineWidth = 1;
  g.textAlign = "right";
  g.textBaseline = "middle";
  for (const fraction of [0, 0.5, 1]) {
    const v = top * fraction;
    g.beginPath();
    g.moveTo(pad.left, y(v));
    g.lineTo(pad.left + plotW, y(v));
    g.stroke();
    g.fillText(chart.percent ? `${v}%` : String(v), pad.left - 6, y(v));
  }
  g.textAlign = "center";
  g.textBaseline = "top";
  for (const minutesAgo of [5, 4, 3, 2, 1, 0]) {
    g.fillText(minutesAgo ? `-${minutesAgo}m` : "now", x(now - minutesAgo * 60000), pad.top + plotH + 6);
  }
  if (limitOnScale) drawLimit(g, limit, { pad, plotW, y });
  g.lineWidth = 2.5;
  for (const line of lines) {
    g.strokeStyle = line.color;
    g.beginPath();
    line.points.forEach(([t, v], i) => (i ? g.lineTo(x(t), y(v)) : g.moveTo(x(t), y(v))));
    g.stroke();
    const last = line.points.at(-1);
    if (last) { // the latest value as a dot: visible even before there is a line
      g.fillStyle = line.color;
      g.beginPath();
      g.arc(x(last[0]), y(last[1]), 3.5, 0, 2 * Math.PI);
      g.fill();
    }
  }
  const legend = $(`legend-${chart.id}`);
  legend.replaceChildren(...lines.map((line) => {
    const last = line.points.at(-1);
    const value = last ? (chart.percent ? `${last[1].toFixed(1)}%` : formatValue(last[1])) : "–";
    return el("span", { class: "key" }, el("i", { style: `background:${line.color}` }), `${line.label} `,
      el("b", {}, value));
  }), ...(limit != null ? [el("span", { class: "key" },
    el("i", { class: "limit" }), "limit ", el("b", {}, String(limit)),
    limitOnScale ? "" : " (off the scale)")] : []));
}

function drawLimit(g, limit, { pad, plotW, y }) {
  g.save();
  g.strokeStyle = COLORS.red;
  g.fillStyle = COLORS.red;
  g.setLineDash([8, 6]);
  g.lineWidth = 2;
  g.beginPath();
  g.moveTo(pad.left, y(limit));
  g.lineTo(pad.left + plotW, y(limit));
  g.stroke();
  g.textAlign = "left";
  g.textBaseline = "top";
  g.fillText(`ulimit -n ${limit}`, pad.left + 6, y(limit) + 3);
  g.restore();
}

function formatValue(v) {
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

function setup() {
  $("source").textContent = url;
  const grid = $("charts");
  grid.replaceChildren(...CHARTS.map((chart) => el("figure", { class: "chart" },
    el("figcaption", {}, chart.title), el("canvas", { id: `chart-${chart.id}` }),
    el("div", { class: "legend", id: `legend-${chart.id}` }))));
  window.addEventListener("resize", render);
  poll();
}

setup();
