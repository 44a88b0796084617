#!/usr/bin/env node
// Tracing starts before anything loads the HTTP stack, so its instrumentation can patch it.
import { startTracing } from '@hubside/service-kit/tracing';

const SERVERS = new Set(['start', 'auth-bridge', 'profile-api', 'usage-collector', 'data-gateway']);
const command = process.argv[2];
const tracing = SERVERS.has(command) ? await startTracing(command === 'start' ? 'hubside' : command) : null;
const { main } = await import('../dist/main.js');
process.exitCode = await main(process.argv.slice(2), { tracing });
