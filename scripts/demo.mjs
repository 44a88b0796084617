#!/usr/bin/env node
// `npm run demo`: a local JupyterHub at http://127.0.0.1:8000 with the four Hubside services as
// hub-managed services, for clicking through. Log in with any username (no password).
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const services = ['auth-bridge', 'profile-api', 'usage-collector', 'data-gateway'];

const which = spawnSync('sh', ['-c', 'command -v jupyterhub'], { encoding: 'utf8' });
const jupyterhub = which.stdout.trim();
if (which.status !== 0 || !jupyterhub) {
  process.stderr.write(
    'npm run demo needs JupyterHub on PATH.\n' +
      '  Debian/Ubuntu: sudo apt-get install jupyterhub\n' +
      '  elsewhere:     pip install jupyterhub && npm install -g configurable-http-proxy\n',
  );
  process.exit(1);
}

const dir = join(root, '.hubside', 'demo');
mkdirSync(dir, { recursive: true });
const settings = {
  bind_url: 'http://127.0.0.1:8000',
  hub_port: 8081,
  db_url: `sqlite:///${join(dir, 'jupyterhub.sqlite')}`,
  cookie_secret_file: join(dir, 'jupyterhub_cookie_secret'),
  pid_file: join(dir, 'jupyterhub.pid'),
  services: services.map((name, i) => ({
    name,
    url: `http://127.0.0.1:${10101 + i}`,
    command: [process.execPath, join(root, 'packages/cli/bin/hubside.js'), name],
    display: true,
    oauth_no_confirm: true,
    environment: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HUBSIDE_CONFIG: join(root, 'examples/community.yaml'),
      HUBSIDE_DATA_DIR: join(dir, 'data'),
      HUBSIDE_COOKIE_SECRET: randomBytes(32).toString('base64url'),
    },
  })),
};
// Names and paths travel as JSON, so nothing is pasted into Python source.
writeFileSync(join(dir, 'demo.json'), JSON.stringify(settings, null, 2));
writeFileSync(
  join(dir, 'jupyterhub_config.py'),
  `import json, os
s = json.load(open(${JSON.stringify(join(dir, 'demo.json'))}))
c = get_config()  # noqa
c.JupyterHub.bind_url = s["bind_url"]
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = s["hub_port"]
c.JupyterHub.db_url = s["db_url"]
c.JupyterHub.cookie_secret_file = s["cookie_secret_file"]
c.JupyterHub.pid_file = s["pid_file"]
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.spawner_class = "simple"
c.Spawner.default_url = "/tree"
if os.geteuid() == 0:
    c.Spawner.args = ["--allow-root"]
c.JupyterHub.services = s["services"]
c.JupyterHub.load_roles = [
    {"name": "user", "scopes": ["self", "access:services"]},
]
`,
);

process.stdout.write(
  '\nStarting JupyterHub at http://127.0.0.1:8000 — log in with any name, then open Services.\n' +
    services.map((s) => `  http://127.0.0.1:8000/services/${s}/`).join('\n') +
    '\nCtrl-C stops everything.\n\n',
);
const hub = spawn(jupyterhub, ['-f', join(dir, 'jupyterhub_config.py')], {
  cwd: dir,
  stdio: 'inherit',
  // Debian's configurable-http-proxy finds its modules only through NODE_PATH.
  env: { ...process.env, NODE_PATH: [process.env.NODE_PATH, '/usr/share/nodejs'].filter(Boolean).join(':') },
});
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => hub.kill(signal));
hub.on('exit', (code) => process.exit(code ?? 0));
