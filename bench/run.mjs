// Runs every benchmark in bench/*/index.mjs, one after another, and exits non-zero if any fails.
//
//   npm run bench                    # tsc -b, then every benchmark in full
//   node bench/run.mjs --quick       # short runs, to check that the benchmarks work
//   node bench/run.mjs --only hub-auth
//
// A benchmark module exports `run({ quick, ... })`, resolving with `{ ok, failures, file }`.

import { readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const HERE = dirname(fileURLToPath(import.meta.url));

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string', multiple: true },
    'cpu-prof': { type: 'string' },
    'results-dir': { type: 'string' },
  },
  strict: true,
});

const names = readdirSync(HERE)
  .filter((entry) => {
    try {
      return statSync(join(HERE, entry)).isDirectory() && statSync(join(HERE, entry, 'index.mjs')).isFile();
    } catch {
      return false;
    }
  })
  .sort();
const selected = values.only ? names.filter((n) => values.only.includes(n)) : names;
const unknown = (values.only ?? []).filter((n) => !names.includes(n));
if (unknown.length > 0 || selected.length === 0) {
  process.stderr.write(`No benchmark named ${unknown.join(', ') || '(none)'}; there are: ${names.join(', ')}\n`);
  process.exit(64);
}

const outcomes = [];
for (const name of selected) {
  const started = performance.now();
  process.stdout.write(`\n=== bench/${name}${values.quick ? ' (quick)' : ''} ===\n`);
  let outcome;
  try {
    const mod = await import(pathToFileURL(join(HERE, name, 'index.mjs')).href);
    if (typeof mod.run !== 'function') throw new Error(`bench/${name}/index.mjs exports no run()`);
    outcome = await mod.run({ quick: values.quick, cpuProf: values['cpu-prof'], resultsDir: values['results-dir'] });
  } catch (err) {
    outcome = { ok: false, failures: [err instanceof Error ? (err.stack ?? err.message) : String(err)] };
  }
  outcomes.push({ name, seconds: (performance.now() - started) / 1000, ...outcome });
}

process.stdout.write('\n=== summary ===\n');
for (const o of outcomes) {
  process.stdout.write(`${o.ok ? 'ok    ' : 'FAILED'} ${o.name} (${o.seconds.toFixed(0)} s)${o.file ? ` -> ${o.file}` : ''}\n`);
  if (!o.ok) for (const f of o.failures ?? []) process.stdout.write(`         ${f.split('\n').join('\n         ')}\n`);
}
process.exitCode = outcomes.every((o) => o.ok) ? 0 : 1;
