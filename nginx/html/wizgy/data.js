// The live view's data handling, without the DOM: what the page does with each /status
// report. Pure functions over plain objects, so `node --test` can check them.
//
//   const store = createStore();                  // every replica's series
//   ingest(store, report, Date.now());             // one /status answer
//   hostNames(store)                               // replicas seen, for the selector
//   store.hosts.get(name).samples                  // [{t, processes, zombies, ...}, ...]
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
  };
  const rate = rates(previous, report);
  if (rate) Object.assign(sample, rate);
  return sample;
}

// Requests per second and the share of them that failed (4xx + 5xx), between two
// reports of the same replica. null when there is no earlier report, time did not
// advance, or the counters went down (the server restarted).
export function rates(previous, report) {
  if (!previous || previous.pid !== report.pid) return null;
  const seconds = report.time - previous.time;
  const requests = report.requests_total - previous.requests_total;
  if (!(seconds > 0) || requests < 0) return null;
  const errors =
    report.responses_4xx + report.responses_5xx - previous.responses_4xx - previous.responses_5xx;
  return {
    rps: requests / seconds,
    error_rate: requests > 0 ? Math.max(0, errors) / requests : 0,
  };
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
