// node --test nginx/html/wizgy/tests/   (the live view's data handling, no browser)
import assert from "node:assert/strict";
import test from "node:test";

import {
  cpu, createStore, formatBytes, formatDuration, hostNames, ingest, isStale, mergeEvents,
  niceMax, pickHost, processRows, rates, series, statusUrl, STALE_MS, totals,
} from "../data.js";

function report(over = {}) {
  return {
    hostname: "web-1", time: 1000, pid: 10, role: "master", model: "prefork", lesson: null,
    children: 2, zombies: 0, open_fds: 12, open_fds_max: 14, nofile_limit: 1024,
    nproc_limit: 4096, requests_total: 100, responses_4xx: 0, responses_5xx: 0,
    connections_active: 1, connections_idle: 3, uptime_seconds: 5,
    processes: [
      { pid: 10, role: "master", state: "S", open_fds: 12, rss_bytes: 2048, requests: 0 },
      { pid: 12, role: "worker", state: "S", open_fds: 14, rss_bytes: 4096, requests: 60 },
      { pid: 11, role: "worker", state: "R", open_fds: 13, rss_bytes: 4096, requests: 40 },
      { pid: 13, role: "status", state: "S", open_fds: 8, rss_bytes: 1024, requests: 0 },
    ],
    events: [],
    ...over,
  };
}

test("statusUrl: the query parameter wins, else the nginx path", () => {
  assert.equal(statusUrl(""), "/wizgy/status");
  assert.equal(statusUrl("?status=http://127.0.0.1:9000/status"), "http://127.0.0.1:9000/status");
  assert.equal(statusUrl("?host=a", "/x"), "/x");
});

const NO_CPU = { cpu_workers: null, cpu_busiest: null };

test("rates: requests per second and error shares, 4xx and 5xx apart", () => {
  const a = report();
  const b = report({ time: 1002, requests_total: 140, responses_4xx: 3, responses_5xx: 1 });
  assert.deepEqual(rates(a, b), { rps: 20, error_rate: 0.1, errors_4xx: 0.075, errors_5xx: 0.025, ...NO_CPU });
  assert.equal(rates(null, b), null);
  assert.equal(rates(b, b), null, "no time passed");
  assert.equal(rates(b, report({ time: 1003, requests_total: 5 })), null, "counters went down");
  assert.equal(rates(a, report({ time: 1001, pid: 99 })), null, "another server process");
  assert.deepEqual(rates(a, report({ time: 1001 })),
    { rps: 0, error_rate: 0, errors_4xx: 0, errors_5xx: 0, ...NO_CPU });
});

test("ingest: one series per replica; rates never mix replicas", () => {
  const store = createStore();
  ingest(store, report(), 0);
  ingest(store, report({ hostname: "web-2", time: 1001, requests_total: 5 }), 1000);
  const s = ingest(store, report({ time: 1002, requests_total: 110, zombies: 1 }), 2000);
  assert.deepEqual(hostNames(store), ["web-1", "web-2"]);
  assert.equal(s.rps, 5);
  assert.equal(s.zombies, 1);
  assert.equal(s.processes, 3, "master and two workers; the status process is not counted");
  assert.equal(store.hosts.get("web-2").samples[0].rps, null);
  assert.equal(store.hosts.get("web-1").samples.length, 2);
});

test("ingest: samples older than the window are dropped", () => {
  const store = createStore(10_000);
  for (let i = 0; i < 30; i++) ingest(store, report({ time: 1000 + i }), i * 1000);
  const samples = store.hosts.get("web-1").samples;
  assert.equal(samples[0].t, 19_000);
  assert.equal(samples.at(-1).t, 29_000);
});

test("pickHost and isStale: a replica to show, and one that stopped answering", () => {
  const store = createStore();
  assert.equal(pickHost(store, "x"), null);
  ingest(store, report({ hostname: "b" }), 0);
  ingest(store, report({ hostname: "a" }), 0);
  assert.equal(pickHost(store, "b"), "b");
  assert.equal(pickHost(store, "gone"), "a");
  assert.equal(isStale(store.hosts.get("a"), STALE_MS - 1), false);
  assert.equal(isStale(store.hosts.get("a"), STALE_MS + 1), true);
});

test("mergeEvents: repeated reports add each event once, in time order, bounded", () => {
  const host = { events: [], eventKeys: new Set() };
  const e1 = { time: 1, pid: 5, event: "worker started" };
  const e2 = { time: 2, pid: 6, event: "worker started" };
  mergeEvents(host, [e2]);
  mergeEvents(host, [e1, e2]);
  assert.deepEqual(host.events, [e1, e2]);
  const many = Array.from({ length: 250 }, (_, i) => ({ time: 10 + i, pid: 1, event: "x" }));
  mergeEvents(host, many);
  assert.equal(host.events.length, 200);
  assert.equal(host.events[0].time, 60);
  assert.equal(host.eventKeys.size, 200);
});

test("processRows: main first, then by pid, status last; zombies flagged", () => {
  const r = report({
    processes: [...report().processes,
      { pid: 9, role: "child", state: "Z", open_fds: 0, rss_bytes: 0, requests: 1 }],
  });
  const rows = processRows(r);
  assert.deepEqual(rows.map((row) => row.pid), [10, 11, 12, 9, 13]);
  assert.deepEqual(rows.map((row) => row.zombie), [false, false, false, true, false]);
  assert.equal(rows[0].fds, "12 / 1024");
  assert.equal(rows[3].rss, "-");
  assert.equal(processRows(report({ nofile_limit: null }))[0].fds, "12 / ∞");
});

test("formatting and scales", () => {
  assert.equal(formatBytes(512), "512 B");
  assert.equal(formatBytes(25 * 1024 * 1024), "25.0 MiB");
  assert.equal(formatDuration(125), "2m 05s");
  assert.equal(formatDuration(3725), "1h 02m");
  assert.equal(niceMax([]), 1);
  assert.equal(niceMax([0, 0]), 1);
  assert.equal(niceMax([3]), 5);
  assert.equal(niceMax([12, null, 7]), 20);
  assert.equal(niceMax([1024]), 2000);
  assert.deepEqual(series([{ t: 1, rps: null }, { t: 2, rps: 3 }], "rps"), [[2, 3]]);
});

function withCpu(time, seconds) { // report() whose processes have used `seconds` of CPU each
  return report({ time, processes: report().processes.map((p, i) => ({ ...p, cpu_seconds: seconds[i] })) });
}

test("cpu: workers' mean and the busiest process, as shares of one core", () => {
  // master 10, workers 12 and 11, status 13 (left out)
  const a = withCpu(1000, [1, 10, 20, 0]);
  const b = withCpu(1002, [1.2, 11.9, 21.7, 2]);
  const got = cpu(a, b, 2);
  assert.ok(Math.abs(got.cpu_workers - 0.9) < 1e-9, got); // (0.95 + 0.85) / 2
  assert.ok(Math.abs(got.cpu_busiest - 0.95) < 1e-9, got);
  assert.deepEqual(cpu(report(), report(), 1), NO_CPU, "no cpu_seconds: nothing to say");
  // One process serving (threaded): it is the worker.
  const one = (t, s) => report({ time: t, processes: [{ pid: 10, role: "server", cpu_seconds: s }] });
  assert.ok(Math.abs(cpu(one(0, 5), one(1, 5.5), 1).cpu_workers - 0.5) < 1e-9);
  assert.ok(Math.abs(rates(a, b).cpu_workers - 0.9) < 1e-9, "rates carries it");
});

test("totals: every replica answering, added up; a stale one left out", () => {
  const store = createStore();
  ingest(store, report({ hostname: "a", zombies: 1 }), 0);
  ingest(store, report({ hostname: "a", time: 1001, requests_total: 120, responses_5xx: 10, zombies: 1 }), 1000);
  ingest(store, report({ hostname: "b", children: 3 }), 0);
  ingest(store, report({ hostname: "b", time: 1002, requests_total: 160, responses_4xx: 6, children: 3 }), 1000);
  const sum = totals(store, 1500);
  assert.equal(sum.replicas, 2);
  assert.equal(sum.children, 5);
  assert.equal(sum.zombies, 1);
  assert.equal(sum.rps, 50); // 20 + 30
  assert.equal(sum.errors_5xx, 10);
  assert.equal(sum.errors_4xx, 3);
  assert.equal(sum.cpu_workers, null);
  ingest(store, report({ hostname: "b", time: 1100, requests_total: 170, children: 3 }), STALE_MS + 2000);
  assert.equal(totals(store, STALE_MS + 2000).replicas, 1, "a went quiet");
  assert.equal(totals(store, STALE_MS + 2000).children, 3);
});
