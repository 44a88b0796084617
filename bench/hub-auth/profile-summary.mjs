// Summarise a V8 .cpuprofile (from `node bench/hub-auth/index.mjs --cpu-prof DIR`): where our
// service spent its CPU, by package and by function (self time).
//
//   node bench/hub-auth/profile-summary.mjs DIR/CPU.*.cpuprofile [--results FILE.json] [--top 30]
//
// With --results (the JSON the same run wrote), only samples taken during our warm-token runs
// count, so start-up (module loading, the embedded database) and the storms stay out of it. The
// benchmark stamps those runs with CLOCK_MONOTONIC, the clock V8 stamps samples with.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({
  options: { top: { type: 'string', default: '30' }, results: { type: 'string' } },
  allowPositionals: true,
});
if (positionals.length !== 1) {
  process.stderr.write('Usage: node bench/hub-auth/profile-summary.mjs FILE.cpuprofile [--results FILE.json] [--top N]\n');
  process.exit(64);
}
const profile = JSON.parse(readFileSync(positionals[0], 'utf8'));
const top = Number(values.top);

let windows;
if (values.results) {
  const results = JSON.parse(readFileSync(values.results, 'utf8'));
  windows = (results.warm?.runs?.ours ?? []).map((r) => r.monotonicUs).filter(Array.isArray);
  if (windows.length === 0) {
    process.stderr.write(`${values.results} has no warm runs of ours with monotonic timestamps\n`);
    process.exit(1);
  }
}
const inWindow = (t) => !windows || windows.some(([from, to]) => t >= from && t <= to);

// Sample i was taken at startTime + the sum of the first i+1 deltas (all in microseconds); it
// accounts for the time since the previous sample.
const selfMicros = new Map();
let t = profile.startTime;
let kept = 0;
for (let i = 0; i < profile.samples.length; i += 1) {
  const delta = profile.timeDeltas[i] ?? 0;
  t += delta;
  if (!inWindow(t)) continue;
  kept += 1;
  const id = profile.samples[i];
  selfMicros.set(id, (selfMicros.get(id) ?? 0) + delta);
}
if (windows && kept === 0) {
  process.stderr.write('no sample falls inside the warm runs: is this the profile of the same run?\n');
  process.exit(1);
}
const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

function area(url) {
  if (!url) return '(native/V8)';
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m) return m[1];
  if (url.startsWith('node:')) return 'node core';
  const ws = /\/(packages|services)\/([^/]+)\//.exec(url);
  if (ws) return `@hubside/${ws[2]}`;
  return url;
}

let total = 0;
const byArea = new Map();
const byFunction = new Map();
const byStackArea = new Map();
for (const [id, us] of selfMicros) {
  const n = nodes.get(id);
  const fn = n.callFrame.functionName || '(anonymous)';
  const url = n.callFrame.url;
  total += us;
  const a = fn === '(idle)' || fn === '(program)' || fn === '(garbage collector)' ? fn : area(url);
  byArea.set(a, (byArea.get(a) ?? 0) + us);
  const key = `${fn}  ${url ? `${url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*\/(packages|services)\//, '$1/')}:${n.callFrame.lineNumber + 1}` : ''}`;
  byFunction.set(key, (byFunction.get(key) ?? 0) + us);
  // Attribute native/core time to the nearest JS frame from a package, so "writev" shows up
  // under whoever asked for it.
  let cur = id;
  let owner = a;
  for (let depth = 0; depth < 200 && (owner === '(native/V8)' || owner === 'node core'); depth += 1) {
    cur = parent.get(cur);
    if (cur === undefined) break;
    const pn = nodes.get(cur);
    const pa = area(pn.callFrame.url);
    if (pa !== '(native/V8)' && pa !== 'node core') owner = pa;
  }
  byStackArea.set(owner, (byStackArea.get(owner) ?? 0) + us);
}

const busy = total - (byArea.get('(idle)') ?? 0);
const pct = (us, of) => `${((100 * us) / of).toFixed(1).padStart(5)}%`;
const print = (title, map, of, limit) => {
  process.stdout.write(`\n${title}\n`);
  for (const [k, us] of [...map].sort((a, b) => b[1] - a[1]).slice(0, limit)) {
    process.stdout.write(`  ${pct(us, of)}  ${(us / 1000).toFixed(0).padStart(7)} ms  ${k}\n`);
  }
};
process.stdout.write(
  `profile: ${(total / 1e6).toFixed(1)} s sampled${windows ? ` (only our ${windows.length} warm run(s))` : ''}, ${(busy / 1e6).toFixed(1)} s busy (not idle)\n`,
);
print('self time by area (% of busy time)', new Map([...byArea].filter(([k]) => k !== '(idle)')), busy, 25);
print('self time by area, native and core time charged to the nearest package frame (% of busy)', new Map([...byStackArea].filter(([k]) => k !== '(idle)')), busy, 25);
print(`top ${top} functions by self time (% of busy)`, new Map([...byFunction].filter(([k]) => !k.startsWith('(idle)'))), busy, top);
