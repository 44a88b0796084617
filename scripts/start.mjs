#!/usr/bin/env node
// `npm start`: the whole local product when `jupyterhub` is on PATH (a hub at http://127.0.0.1:8000
// with the four services, demo people and sample usage); otherwise the four services alone, as
// `hubside start` runs them. HUBSIDE_SERVICES_ONLY=1 asks for the services alone even with a hub.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { INSTALL_OAUTHENTICATOR, PRODUCT_OIDC, REPO_ROOT, findJupyterhub, hubPython, oauthenticatorAvailable, startProduct } from './product/product.mjs';

const launchedAt = Number(process.env.HUBSIDE_LAUNCHED_AT) || Date.now();
const jupyterhub = process.env.HUBSIDE_SERVICES_ONLY ? null : findJupyterhub();

if (!jupyterhub) {
  process.stdout.write(
    'jupyterhub is not on PATH: starting the four services alone (no hub, no login).\n' +
      'For the whole product with a hub, demo people and sample usage: apt-get install jupyterhub (Debian/Ubuntu), then npm start.\n',
  );
  const cli = spawn(process.execPath, [join(REPO_ROOT, 'packages/cli/bin/hubside.js'), 'start', '--config', join(REPO_ROOT, 'examples/community.yaml')], {
    stdio: 'inherit',
  });
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => cli.kill(sig));
  cli.on('exit', (code, sig) => process.exit(code ?? (sig ? 1 : 0)));
} else {
  const oidc = PRODUCT_OIDC && oauthenticatorAvailable(hubPython(jupyterhub));
  process.stdout.write(`Starting JupyterHub and the four Hubside services side by side (logs in .hubside/product/logs) ...\n`);
  let product;
  try {
    // HUBSIDE_PRODUCT_PORTS ('free', or JSON like DEFAULT_PORTS) and HUBSIDE_PRODUCT_STATE_DIR let
    // bench/start run `npm start` itself beside other hubs.
    const ports = process.env.HUBSIDE_PRODUCT_PORTS;
    product = await startProduct({
      jupyterhub,
      launchedAt,
      login: oidc ? 'oidc' : 'fallback',
      ...(ports ? { ports: ports === 'free' ? 'free' : JSON.parse(ports) } : {}),
      ...(process.env.HUBSIDE_PRODUCT_STATE_DIR ? { stateDir: process.env.HUBSIDE_PRODUCT_STATE_DIR } : {}),
    });
  } catch (err) {
    process.stderr.write(`npm start failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }
  const { demo, url } = product;
  const lines = [
    '',
    `Hubside is up in ${(product.timings.readyMs / 1000).toFixed(1)} s. Open ${url}/hub/login and log in as:`,
    ...demo.people.map((p) => `  ${p.name.padEnd(10)} ${p.role}: ${p.views}`),
    '',
    product.login === 'oidc'
      ? 'Login goes through auth-bridge and the demo identity provider (Demo University): pick a person there.'
      : `Demo login (no password): the hub's Python has no oauthenticator. For the real login through auth-bridge: ${INSTALL_OAUTHENTICATOR}`,
    '',
    'The services (through the hub):',
    ...['profile-api', 'usage-collector', 'data-gateway', 'auth-bridge'].map((s) => `  ${url}/services/${s}/`),
    '',
    'Ctrl-C stops everything.',
    '',
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  let stopping = false;
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => {
      if (stopping) return;
      stopping = true;
      process.stdout.write('\nStopping ...\n');
      void product.stop().then(() => process.exit(0));
    });
  }
  // Report a service or the hub going away on its own.
  const watch = setInterval(() => {
    const problem = product.exited();
    if (problem && !stopping) {
      process.stderr.write(`${problem}\n`);
      clearInterval(watch);
    }
  }, 1000);
}
