// The live view's data handling, without the DOM: what the page does with each /status
// report. Pure functions over plain objects, so `node --test` can check them.
//
//   const store = createStore();                  // every replica's series
//   ingest(store, report, Date.now());             // one /status answer
//   hostNames(store)                               // replicas seen, for the selector
//   store.hosts.get(name).samples                  // [{t, processes, zombies, ...}, ...]
//   totals(store, now)                             // the sum over every replica answering
//
// With `--scale server=N`, nginx sends each poll to one replica; every replica has
// its own series, keyed by the hostname it reports, and its rates come from its own
// consecutive reports (never from two different replicas' counters).

export const WINDOW_MS = 5 * 60 * 1000; // the charts show the last five minutes
export const MAX_EVENTS = 200; // per replica
export const STALE_MS = 10 * 1000; // a replica silent this long is shown as gone

const MAIN_ROLES = new Set(["master", "parent", "server"]);
const ROLE_ORDER = { master: 0, parent: 0, server: 0, worker: 1, child: 2, status: 3 };

export function statusUrl(search, fallback = "/wizgy/status") {
  // `?status=http://127.0.0.1:9000/status` points the page at another status listener.
  const value = new URLSearchParams(search || "").get("status");
  return value || fallback;
}

export function createStore(windowMs = WINDOW_MS) {
  return { windowMs, hosts: new Map() };
}

export function hostNames(store) {
  return [...store.hosts.keys()].sort();
}

// The host to show: the one asked for if known, else the first one seen.
export function pickHost(store, wanted) {
  if (wanted && store.hosts.has(wanted)) return wanted;
  return hostNames(store)[0] ?? null;
}

export function isStale(host, now) {
  return now - host.lastSeen > STALE_MS;
}

// One /status report into its replica's series. `now` is the page's clock (ms); the
// report's own `time` (seconds) measures rates, so polling jitter does not.
export function ingest(store, report, now) {
  const name = report.hostname || "server";
  let host = store.hosts.get(name);
  if (!host) {
    host = { name, samples: [], events: [], eventKeys: new Set(), last: null, lastSeen: 0 };
    store.hosts.set(name, host);
  }
  const sample = toSample(report, host.last, now);
  host.samples.push(sample);
  host.last = report;
  host.lastSeen = now;
  trim(host.samples, now - store.windowMs);
  mergeEvents(host, report.events || []);
  return sample;
}

export function toSample(report, previous, now) {
  const workers = (report.processes || []).filter((p) => !MAIN_ROLES.has(p.role) && p.role !== "status");
  const sample = {
    t: now,
    processes: workers.length + 1, // the main process and its children, not the status one
    children: report.children,
    zombies: report.zombies,
    open_fds: report.open_fds,
    open_fds_max: report.open_fds_max ?? report.open_fds,
    nofile_limit: report.nofile_limit,
    active: report.connections_active,
    idle: report.connections_idle,
    rps: null,
    error_rate: null,
    errors_4xx: null,
    errors_5xx: null,
    cpu_workers: null,
    cpu_busiest: null,
  };
  const rate = rates(previous, report);
  if (rate) Object.assign(sample, rate);
  return sample;
}

// Between two reports of the same replica: requests per second; the share of them
// answered 4xx (the client's fault: a missing page, a bad request) and 5xx (the
// server's: 500, 502, 503 when fork fails); and CPU. null when there is no earlier
// report, time did not advance, or the counters went down (the server restarted).
export function rates(previous, report) {
  if (!previous || previous.pid !== report.pid) return null;
  const seconds = report.time - previous.time;
  const requests = report.requests_total - previous.requests_total;
  if (!(seconds > 0) || requests < 0) return null;
  const share = (n) => (requests > 0 ? Math.max(0, n) / requests : 0);
  const errors_4xx = share(report.responses_4xx - previous.responses_4xx);
  const errors_5xx = share(report.responses_5xx - previous.responses_5xx);
  return {
    rps: requests / seconds,
    error_rate: errors_4xx + errors_5xx,
    errors_4xx,
    errors_5xx,
    ...cpu(previous, report, seconds),
  };
}

// CPU as a share of one core (1 = 100%), from each process's cpu_seconds in two
// reports. cpu_workers: the mean over the processes that serve (prefork's workers;
// the one process of threaded/iterative; fork's parent and children together, as
// one); cpu_busiest: the busiest single process. A worker's Python runs on one core
// at a time (the GIL), so 1 is as busy as a worker gets.
export function cpu(previous, report, seconds) {
  const before = new Map((previous.processes || []).map((p) => [p.pid, p.cpu_seconds]));
  const used = [];
  for (const p of report.processes || []) {
    const then = before.get(p.pid);
    if (p.role === "status" || p.cpu_seconds == null || then == null) continue;
    used.push({ role: p.role, share: Math.max(0, p.cpu_seconds - then) / seconds });
  }
  if (!used.length) return { cpu_workers: null, cpu_busiest: null };
  const workers = used.filter((u) => u.role === "worker");
  const total = (list) => list.reduce((sum, u) => sum + u.share, 0);
  return {
    cpu_workers: workers.length ? total(workers) / workers.length : total(used),
    cpu_busiest: Math.max(...used.map((u) => u.share)),
  };
}

// Every replica still answering, added up: what the whole service is doing.
export function totals(store, now) {
  const sum = { replicas: 0, children: 0, zombies: 0, rps: 0, errors_4xx: 0, errors_5xx: 0,
    cpu_workers: null };
  const cpus = [];
  for (const host of store.hosts.values()) {
    if (isStale(host, now) || !host.last) continue;
    const sample = host.samples.at(-1) || {};
    sum.replicas += 1;
    sum.children += host.last.children || 0;
    sum.zombies += host.last.zombies || 0;
    sum.rps += sample.rps || 0;
    sum.errors_4xx += (sample.rps || 0) * (sample.errors_4xx || 0); // per second
    sum.errors_5xx += (sample.rps || 0) * (sample.errors_5xx || 0);
    if (sample.cpu_workers != null) cpus.push(sample.cpu_workers);
  }
  if (cpus.length) sum.cpu_workers = cpus.reduce((a, b) => a + b, 0) / cpus.length;
  return sum;
}

function trim(samples, oldest) {
  let drop = 0;
  while (drop < samples.length && samples[drop].t < oldest) drop++;
  if (drop) samples.splice(0, drop);
}

// Reports repeat the recent events; keep each once, in time order, at most MAX_EVENTS.
export function mergeEvents(host, events) {
  for (const event of events) {
    const key = `${event.time}|${event.pid}|${event.event}`;
    if (host.eventKeys.has(key)) continue;
    host.eventKeys.add(key);
    host.events.push(event);
  }
  host.events.sort((a, b) => a.time - b.time);
  while (host.events.length > MAX_EVENTS) {
    const old = host.events.shift();
    host.eventKeys.delete(`${old.time}|${old.pid}|${old.event}`);
  }
}

// The process table: main process first, then workers/children by pid, status last.
export function processRows(report) {
  const limit = report.nofile_limit;
  return [...(report.processes || [])]
    .sort((a, b) => (ROLE_ORDER[a.role] ?? 2) - (ROLE_ORDER[b.role] ?? 2) || a.pid - b.pid)
    .map((p) => ({
      pid: p.pid,
      role: p.role,
      state: p.state,
      zombie: p.state === "Z",
      fds: p.open_fds == null || p.state === "Z" ? "-" : `${p.open_fds} / ${limit ?? "∞"}`,
      fdShare: p.open_fds != null && limit ? p.open_fds / limit : 0,
      rss: p.state === "Z" ? "-" : formatBytes(p.rss_bytes),
      requests: p.requests,
    }));
}

export function formatBytes(n) {
  if (n == null) return "-";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

export function formatDuration(seconds) {
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
  return `${m}m ${String(s % 60).padStart(2, "0")}s`;
}

// A y-axis top for a chart: the largest value (or limit) rounded up to 1, 2 or 5 x 10^k.
export function niceMax(values) {
  const max = Math.max(0, ...values.filter((v) => typeof v === "number" && isFinite(v)));
  if (max <= 0) return 1;
  const step = 10 ** Math.floor(Math.log10(max));
  for (const m of [1, 2, 5, 10]) if (max <= m * step) return m * step;
  return 10 * step;
}

// The values of one series key, as [t, value] points (nulls dropped).
export function series(samples, key) {
  return samples.filter((s) => s[key] != null).map((s) => [s.t, s[key]]);
}
