#!/usr/bin/env node
// `npm run demo` is `npm start` (kept as an alias): see scripts/start.mjs.
await import('./start.mjs');
