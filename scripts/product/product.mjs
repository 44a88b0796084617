// The whole local product: a JupyterHub with the four Hubside services wired in as the docs tell an
// operator, demo people, sample usage. `npm start` (scripts/start.mjs) and test/product use this
// one function, so the test proves what a person who types `npm start` gets.
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';

const HERE = dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = resolve(HERE, '../..');
export const SERVICES = ['auth-bridge', 'profile-api', 'usage-collector', 'data-gateway'];
export const INSTALL_OAUTHENTICATOR = 'pip install oauthenticator';
/** Whether this launcher can wire the login through auth-bridge and a demo identity provider yet. */
export const PRODUCT_OIDC = true;
const DEBIAN_NODE_PATH = '/usr/share/nodejs';

/** The fixed addresses of `npm start`. */
export const DEFAULT_PORTS = {
  public: 8000,
  proxyApi: 8001,
  hub: 8081,
  idp: 10100,
  services: { 'auth-bridge': 10101, 'profile-api': 10102, 'usage-collector': 10103, 'data-gateway': 10104 },
};

const DISPLAY_NAMES = {
  'auth-bridge': 'Sign-in (auth-bridge)',
  'profile-api': 'Start a server',
  'usage-collector': 'Usage and budget',
  'data-gateway': 'Data access',
};
const DESCRIPTIONS = {
  'auth-bridge': 'Federated login',
  'profile-api': 'Choose what your server runs, and see what it costs',
  'usage-collector': 'Your usage, your course, everything',
  'data-gateway': 'Short-lived credentials for your data',
};

/** `jupyterhub` on PATH, or null. */
export function findJupyterhub(env = process.env) {
  const which = spawnSync('sh', ['-c', 'command -v jupyterhub'], { encoding: 'utf8', env });
  const path = which.stdout.trim();
  return which.status === 0 && path ? path : null;
}

/** The Python that runs `jupyterhub` (its shebang): the one that must import oauthenticator. */
export function hubPython(jupyterhub) {
  try {
    const first = readFileSync(jupyterhub, 'utf8').split('\n', 1)[0] ?? '';
    const m = /^#!\s*(\S+)(?:\s+(\S+))?/.exec(first);
    if (m) return m[1].endsWith('/env') && m[2] ? m[2] : m[1];
  } catch {
    // Not a script we can read: fall back to python3.
  }
  return 'python3';
}

export function oauthenticatorAvailable(python) {
  return spawnSync(python, ['-c', 'import oauthenticator'], { stdio: 'ignore', env: cleanPythonEnv(process.env) }).status === 0;
}

function cleanPythonEnv(env) {
  const out = { ...env };
  // The hub must run its own Python and libraries, never a virtualenv the caller happens to be in.
  for (const name of ['PYTHONPATH', 'PYTHONHOME', 'NODE_OPTIONS']) delete out[name];
  return out;
}

/**
 * The demo community: names come from the community file (its `community:` section, else the
 * older per-service fields, else the example's names), so the demo follows edits to the file.
 */
export function demoCommunity(doc) {
  const community = doc?.community ?? {};
  const usage = doc?.['usage-collector'] ?? {};
  const courses = community.courses ?? {};
  const managers = usage.access?.managers ?? {};
  const course = Object.keys(courses)[0] ?? Object.values(managers).flat()[0] ?? 'physics-101';
  const taught = courses[course]?.instructors ?? {};
  const instructorsGroup = taught.groups?.[0] ?? 'instructors';
  const instructor = taught.users?.[0] ?? Object.keys(managers).find((u) => (managers[u] ?? []).includes(course)) ?? 'prof-ada';
  const adminGroup = community.admins?.groups?.[0] ?? usage.access?.adminGroups?.[0] ?? 'hub-staff';
  const currency = community.currency ?? usage.currency ?? 'EUR';
  const profiles = (doc?.['profile-api']?.profiles ?? []).filter((p) => p && typeof p.slug === 'string');
  const name = community.name ?? 'Hubside demo';
  // Groups a profile is limited to, besides the instructors': bob gets them, to show a group-only profile.
  const extraGroups = [...new Set(profiles.flatMap((p) => p.allowed_groups ?? []))].filter((g) => g !== instructorsGroup && g !== adminGroup && g !== course);
  const people = [
    { name: 'alice', role: `student in ${course}`, groups: [course], views: 'Start a server (the profiles and their prices), then Usage and budget: her own usage' },
    { name: 'bob', role: `student in ${course}${extraGroups.length ? ` and ${extraGroups.join(', ')}` : ''}`, groups: [course, ...extraGroups], views: 'more profiles than alice: the group-only ones' },
    { name: 'dan', role: `student in ${course}, over his budget`, groups: [course], views: 'the budget message when he starts a server' },
    { name: instructor, role: `instructor of ${course}`, groups: [instructorsGroup], views: `Usage and budget: the course ${course}` },
    { name: 'grace', role: `community admin (group ${adminGroup})`, groups: [adminGroup], views: 'edit profiles, rate cards and budgets; everyone\'s usage' },
    { name: 'admin', role: 'JupyterHub admin', groups: [], hubAdmin: true, views: 'the hub\'s Admin page, and every service\'s admin view' },
  ];
  const groups = {};
  for (const p of people) for (const g of p.groups) (groups[g] ??= []).push(p.name);
  // Who may edit profiles today: community admins when the file declares them, else profile-api's own admin groups.
  const communityAdmins = (community.admins?.groups ?? []).includes(adminGroup) || (community.admins?.users ?? []).includes('grace');
  const profileAdminGroups = doc?.['profile-api']?.adminGroups ?? [];
  return { name, course, instructorsGroup, instructor, adminGroup, currency, profiles, people, groups, communityAdmins, profileAdminGroups };
}

/** Sample sessions: a fortnight of use for the class, and a month's worth of GPU hours for dan. */
export function demoUsagePlan(demo, now = new Date()) {
  const hour = 3_600_000;
  const day = 24 * hour;
  const cheap = demo.profiles.find((p) => !p.allowed_groups?.length) ?? demo.profiles[0];
  const dear = [...demo.profiles].sort((a, b) => Number(b.price_per_hour ?? 0) - Number(a.price_per_hour ?? 0))[0] ?? cheap;
  if (!cheap) return [];
  const morning = (daysAgo, h) => Math.floor((now.getTime() - daysAgo * day) / day) * day + h * hour;
  const people = Object.fromEntries(demo.people.map((p) => [p.name, p]));
  const plan = [];
  const add = (name, profile, sessions) => {
    const person = people[name];
    const past = sessions.filter((s) => s.startMs + s.hours * hour < now.getTime() - 5 * 60_000);
    if (person && profile && past.length) plan.push({ user: name, groups: person.groups, profile, sessions: past });
  };
  add('alice', cheap, [1, 2, 3, 5, 8, 9, 12].map((d, i) => ({ startMs: morning(d, 9 + (i % 3)), hours: 1.5 + (i % 3) })));
  add('bob', cheap, [1, 4, 6, 7, 11].map((d, i) => ({ startMs: morning(d, 13), hours: 1 + i / 2 })));
  add(demo.instructor, cheap, [2, 6, 10].map((d) => ({ startMs: morning(d, 8), hours: 2 })));
  // Dan spends more than the default budget in this calendar month: 30 GPU hours since the 1st,
  // on six named servers side by side, so even the first hours of a month hold enough of them.
  const monthStart = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1);
  const room = Math.max(0, (now.getTime() - monthStart) / hour - 0.25);
  const danHours = Math.min(5, room);
  if (danHours > 0.1) {
    add('dan', dear, Array.from({ length: 6 }, (_, i) => ({ startMs: monthStart + 60_000, hours: danHours - 1 / 60, server: `gpu-${i + 1}` })));
  }
  return plan;
}

/** auth-bridge's section for `npm start`: one institution, the demo identity provider, for one hub. */
export function oidcBridgeSection(base, { hubUrl, idpUrl, idpClientSecret, hubClientSecret, communityName }) {
  return {
    ...(base ?? {}),
    publicUrl: hubUrl,
    upstreams: {
      demo: {
        displayName: 'Demo University',
        issuer: idpUrl,
        clientId: 'hubside-bridge',
        clientSecret: idpClientSecret,
        scopes: ['openid', 'email', 'profile', 'groups'],
        username: { claim: 'preferred_username' },
        groupClaims: ['groups'],
      },
    },
    hubs: {
      local: {
        displayName: communityName,
        clientId: 'local-hub',
        clientSecret: hubClientSecret,
        redirectUris: [`${hubUrl}/hub/oauth_callback`],
        loginUrl: `${hubUrl}/hub/oauth_login`,
        idps: ['demo'],
        keepUnmappedGroups: true,
      },
    },
  };
}

export async function freePort() {
  return new Promise((res, rej) => {
    const server = createServer();
    server.once('error', rej);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => res(port));
    });
  });
}

async function choosePorts(ports) {
  if (ports !== 'free') return ports ?? DEFAULT_PORTS;
  const [pub, proxyApi, hub, idp, ...svc] = await Promise.all(Array.from({ length: 4 + SERVICES.length }, () => freePort()));
  return { public: pub, proxyApi, hub, idp, services: Object.fromEntries(SERVICES.map((n, i) => [n, svc[i]])) };
}

function secretsFile(stateDir) {
  const file = join(stateDir, 'secrets.json');
  let secrets = {};
  try {
    secrets = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    // First start (or an unreadable file): make new ones.
  }
  const token = () => randomBytes(32).toString('hex');
  secrets.tokens ??= {};
  for (const name of SERVICES) secrets.tokens[name] ??= token();
  secrets.cookieSecret ??= randomBytes(32).toString('base64url');
  secrets.proxyAuthToken ??= token();
  secrets.idpClientSecret ??= token();
  secrets.hubClientSecret ??= token();
  writeFileSync(file, JSON.stringify(secrets, null, 2), { mode: 0o600 });
  return secrets;
}

/** Roles and scopes exactly as hub/README-*.md and README.md tell an operator. */
export function productRoles() {
  return [
    {
      name: 'user',
      description: 'Users reach the services; the profile-api spawn page starts their own server with their token',
      // JupyterHub 3.0 grants an OAuth client the intersection of raw role scopes: `self` alone
      // does not cover servers!user, so the spawn page's scopes are listed.
      scopes: ['self', 'access:services', 'servers!user', 'read:servers!user'],
    },
    {
      name: 'server',
      description: "A server's own token reaches the data-gateway (hubside-creds, the spawn hook)",
      scopes: ['users:activity!user', 'access:servers!user', 'access:services!service=data-gateway'],
    },
    { name: 'hubside-auth-bridge', scopes: ['read:metrics'], services: ['auth-bridge'] },
    {
      name: 'hubside-profile-api',
      scopes: ['read:users', 'list:groups', 'read:groups', 'access:services!service=profile-api', 'read:metrics'],
      services: ['profile-api'],
    },
    {
      name: 'hubside-usage-collector',
      scopes: ['list:users', 'read:users', 'read:servers', 'read:groups', 'list:groups', 'access:services!service=usage-collector', 'read:metrics'],
      services: ['usage-collector'],
    },
    { name: 'hubside-data-gateway', scopes: ['read:metrics'], services: ['data-gateway'] },
  ];
}

/** A hub's `c.JupyterHub.services` entries for services that run beside it (url + api_token). */
export function productServiceEntries(ports, tokens) {
  return SERVICES.map((name) => ({
    displayName: DISPLAY_NAMES[name],
    entry: {
      name,
      url: `http://127.0.0.1:${ports.services[name]}`,
      api_token: tokens[name],
      display: name !== 'auth-bridge',
      oauth_no_confirm: true,
      info: { description: DESCRIPTIONS[name] },
      ...(name === 'profile-api'
        ? { oauth_client_allowed_scopes: ['servers!user', 'read:servers!user', 'access:services!service=profile-api'] }
        : {}),
    },
  }));
}

function tail(file, lines = 30) {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

async function waitUntil(check, { timeoutMs, what, failed }) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const problem = failed?.();
    if (problem) throw new Error(problem);
    try {
      if (await check()) return;
    } catch {
      // Not up yet.
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    // Polling costs CPU that the hub and the services need while they start: not too often.
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function answers(url, want = (res) => res.ok) {
  const res = await fetch(url, { signal: AbortSignal.timeout(2_000), redirect: 'manual' });
  const ok = await want(res);
  await res.body?.cancel().catch(() => undefined);
  return ok;
}

/**
 * Start the hub and the four services side by side and resolve once the hub's login page and
 * every service's health answer through the hub's proxy.
 *
 * @param {import('./product.d.mts').StartProductOptions} [opts]
 * @returns {Promise<import('./product.d.mts').RunningProduct>}
 */
export async function startProduct(opts = {}) {
  const launched = opts.launchedAt ?? Date.now();
  const root = opts.root ?? REPO_ROOT;
  const jupyterhub = opts.jupyterhub ?? findJupyterhub();
  if (!jupyterhub) throw new Error('jupyterhub is not on PATH (Debian/Ubuntu: apt-get install jupyterhub)');
  const stateDir = resolve(opts.stateDir ?? join(root, '.hubside', 'product'));
  const logDir = join(stateDir, 'logs');
  mkdirSync(logDir, { recursive: true });
  const communityFile = resolve(opts.communityFile ?? join(root, 'examples', 'community.yaml'));
  // Plain YAML here: the services validate the file themselves, and the launcher stays light (the
  // hub starts only after the launcher has loaded, so every module it loads delays the hub).
  const doc = parseYaml(readFileSync(communityFile, 'utf8')) ?? {};
  const demo = demoCommunity(doc);
  const ports = await choosePorts(opts.ports);
  const url = `http://127.0.0.1:${ports.public}`;
  const hubBindUrl = `http://127.0.0.1:${ports.hub}`;
  const hubApiUrl = `${hubBindUrl}/hub/api`;
  const secrets = secretsFile(stateDir);
  const python = hubPython(jupyterhub);
  const login = opts.login ?? 'fallback';
  if (login === 'oidc' && !oauthenticatorAvailable(python)) throw new Error(`oauthenticator is not importable by ${python}: ${INSTALL_OAUTHENTICATOR}`);
  const serviceUrls = Object.fromEntries(SERVICES.map((n) => [n, `http://127.0.0.1:${ports.services[n]}/services/${n}/`]));

  // The community file the services read: the given one, with the addresses of this run.
  const productDoc = structuredClone(doc);
  productDoc['auth-bridge'] = { ...(productDoc['auth-bridge'] ?? {}), publicUrl: url };
  const bridge = serviceUrls['auth-bridge'];
  const idpPort = ports.idp ?? DEFAULT_PORTS.idp;
  if (login === 'oidc') {
    productDoc['auth-bridge'] = oidcBridgeSection(productDoc['auth-bridge'], {
      hubUrl: url,
      idpUrl: `http://127.0.0.1:${idpPort}`,
      idpClientSecret: secrets.idpClientSecret,
      hubClientSecret: secrets.hubClientSecret,
      communityName: demo.name,
    });
  }
  const productCommunity = join(stateDir, 'community.yaml');
  writeFileSync(productCommunity, `# Written by scripts/product from ${communityFile}; edit that file instead.\n${JSON.stringify(productDoc, null, 2)}\n`, { mode: 0o600 });

  const settingsFile = join(stateDir, 'hub-settings.json');
  writeFileSync(
    settingsFile,
    JSON.stringify(
      {
        stateDir,
        publicUrl: url,
        hubBindUrl,
        proxyApiUrl: `http://127.0.0.1:${ports.proxyApi}`,
        proxyAuthToken: secrets.proxyAuthToken,
        templatesDir: join(HERE, 'templates'),
        hubSnippetsDir: join(root, 'hub'),
        singleuserCommand: [opts.singleuser ?? join(dirname(jupyterhub), 'jupyterhub-singleuser')],
        login,
        oidc: {
          clientId: 'local-hub',
          clientSecret: secrets.hubClientSecret,
          callbackUrl: `${url}/hub/oauth_callback`,
          // The browser goes through the proxy; the hub calls the bridge directly.
          authorizeUrl: `${url}/services/auth-bridge/oidc/auth`,
          tokenUrl: `${bridge}oidc/token`,
          userdataUrl: `${bridge}oidc/me`,
        },
        people: demo.people.map(({ name, hubAdmin }) => ({ name, hubAdmin: Boolean(hubAdmin) })),
        groups: demo.groups,
        templateVars: {
          login,
          community: demo.name,
          installCommand: INSTALL_OAUTHENTICATOR,
          people: demo.people.map(({ name, role, views }) => ({ name, role, views })),
        },
        services: productServiceEntries(ports, secrets.tokens),
        roles: productRoles(),
        serviceTokens: secrets.tokens,
        serviceUrls,
      },
      null,
      2,
    ),
    { mode: 0o600 },
  );

  const children = [];
  let idp;
  let stopping = false;
  const exitedEarly = () => {
    for (const child of children) {
      if (child.exit && !stopping) return `${child.name} exited (${child.exit}) before the product was up; log ${child.log}:\n${tail(child.log)}`;
    }
    return undefined;
  };
  const start = (name, command, args, env) => {
    const log = join(logDir, `${name}.log`);
    const fd = openSync(log, 'w');
    let proc;
    try {
      proc = spawn(command, args, { cwd: root, env, stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd);
    }
    const child = { name, proc, log, exit: undefined };
    proc.once('error', (err) => (child.exit = err.message));
    proc.once('exit', (code, sig) => (child.exit = sig ?? `code ${code}`));
    children.push(child);
    return child;
  };

  const stop = async () => {
    stopping = true;
    // The hub first: it stops the servers it started and its proxy.
    const order = [...children].sort((a, b) => (a.name === 'jupyterhub' ? -1 : b.name === 'jupyterhub' ? 1 : 0));
    for (const child of order) {
      if (child.exit) continue;
      child.proc.kill('SIGTERM');
      if (child.name === 'jupyterhub') await waitGone(child, 10_000);
    }
    await Promise.all(order.map((c) => waitGone(c, 10_000)));
    await idp?.close();
  };

  try {
    // The hub.
    const hubEnv = cleanPythonEnv(process.env);
    hubEnv.HUBSIDE_PRODUCT_SETTINGS = settingsFile;
    // Debian's configurable-http-proxy finds its modules only through NODE_PATH.
    if (existsSync(DEBIAN_NODE_PATH)) hubEnv.NODE_PATH = [process.env.NODE_PATH, DEBIAN_NODE_PATH].filter(Boolean).join(':');
    start('jupyterhub', jupyterhub, ['-f', join(HERE, 'jupyterhub_config.py')], hubEnv);

    if (login === 'oidc') {
      const { startDemoIdp } = await import('./demo-idp.mjs');
      idp = await startDemoIdp({
        port: idpPort,
        people: demo.people,
        clientId: 'hubside-bridge',
        clientSecret: secrets.idpClientSecret,
        redirectUris: [`${url}/services/auth-bridge/callback/demo`],
      });
    }

    // One embedded-cluster template, built once while the hub starts: the services' and the seed's
    // databases are copies of it, rather than five initdb runs fighting over two cores.
    if (!opts.databaseUrl && !templateBuilt(join(stateDir, 'data'))) {
      const { PGLITE_TEMPLATE_DIR, pgliteTemplate } = await import('@hubside/service-kit');
      await pgliteTemplate(join(stateDir, 'data', PGLITE_TEMPLATE_DIR));
    }

    // The services, side by side: each gets what the hub would give a managed service.
    const base = {};
    for (const name of ['PATH', 'HOME', 'LANG', 'TZ', 'NODE_EXTRA_CA_CERTS']) if (process.env[name] !== undefined) base[name] = process.env[name];
    const serviceEnv = (name) => ({
      ...base,
      JUPYTERHUB_SERVICE_NAME: name,
      JUPYTERHUB_SERVICE_URL: `http://127.0.0.1:${ports.services[name]}`,
      JUPYTERHUB_SERVICE_PREFIX: `/services/${name}/`,
      JUPYTERHUB_API_URL: hubApiUrl,
      JUPYTERHUB_API_TOKEN: secrets.tokens[name],
      JUPYTERHUB_CLIENT_ID: `service-${name}`,
      JUPYTERHUB_OAUTH_CALLBACK_URL: `/services/${name}/oauth_callback`,
      JUPYTERHUB_OAUTH_ACCESS_SCOPES: JSON.stringify([`access:services!service=${name}`]),
      JUPYTERHUB_BASE_URL: '/',
      HUBSIDE_CONFIG: productCommunity,
      HUBSIDE_DATA_DIR: join(stateDir, 'data'),
      HUBSIDE_COOKIE_SECRET: secrets.cookieSecret,
      HUBSIDE_LOG_LEVEL: opts.logLevel ?? 'info',
      ...(opts.databaseUrl ? { DATABASE_URL: opts.databaseUrl } : {}),
      ...(name === 'usage-collector' ? { HUBSIDE_POLL_INTERVAL: String(opts.pollSeconds ?? 10) } : {}),
    });
    const cli = join(root, 'packages', 'cli', 'bin', 'hubside.js');
    const node = opts.node ?? process.execPath;
    for (const name of SERVICES) if (name !== 'usage-collector') start(name, node, [cli, name], serviceEnv(name));

    // Sample usage goes into usage-collector's database before it starts (once per state dir).
    let seeded = 0;
    const seededMarker = join(stateDir, 'usage-seeded');
    if (opts.seed !== false && !existsSync(seededMarker)) {
      const { seedSessions, seedUsage } = await import('./seed.mjs');
      const rows = seedSessions(demoUsagePlan(demo, opts.now ?? new Date()), {
        currency: demo.currency,
        usageProfiles: doc['usage-collector']?.profiles,
      });
      ({ inserted: seeded } = await seedUsage({ dataDir: join(stateDir, 'data'), databaseUrl: opts.databaseUrl, rows }));
      writeFileSync(seededMarker, `${new Date().toISOString()} ${seeded} sessions\n`);
    }
    start('usage-collector', node, [cli, 'usage-collector'], serviceEnv('usage-collector'));

    // Generous: a laptop busy with other work still gets there, it just takes longer.
    const timeoutMs = opts.timeoutMs ?? 180_000;
    let hubUpAt = 0;
    const serviceUpAt = {};
    await Promise.all([
      waitUntil(
        async () => {
          const up = await answers(`${url}/hub/login`);
          if (up) hubUpAt = Date.now();
          return up;
        },
        { timeoutMs, what: `the hub's login page at ${url}/hub/login`, failed: exitedEarly },
      ),
      ...SERVICES.map((name) =>
        waitUntil(
          async () => {
            const up = await answers(`${url}/services/${name}/health`);
            if (up) serviceUpAt[name] = Date.now();
            return up;
          },
          { timeoutMs, what: `${name}'s health at ${url}/services/${name}/health`, failed: exitedEarly },
        ),
      ),
    ]);
    const ready = Date.now();
    return {
      url,
      hubApiUrl,
      login,
      stateDir,
      logDir,
      demo,
      ports,
      serviceTokens: { ...secrets.tokens },
      serviceUrls,
      seededSessions: seeded,
      timings: {
        hubMs: hubUpAt - launched,
        servicesMs: Object.fromEntries(SERVICES.map((n) => [n, serviceUpAt[n] - launched])),
        readyMs: ready - launched,
      },
      exited: exitedEarly,
      stop,
    };
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
}

/** Whether service-kit's embedded-cluster template is there already (its layout: `.pglite-template/<version>-full-<n>/PG_VERSION`). */
function templateBuilt(dataDir) {
  const root = join(dataDir, '.pglite-template');
  try {
    return readdirSync(root).some((d) => d.includes('-full-') && !d.includes('.building-') && existsSync(join(root, d, 'PG_VERSION')));
  } catch {
    return false;
  }
}

async function waitGone(child, ms) {
  if (child.exit) return;
  const gone = new Promise((r) => child.proc.once('exit', r));
  const timer = new Promise((r) => setTimeout(r, ms, 'timeout'));
  if ((await Promise.race([gone, timer])) === 'timeout' && !child.exit) {
    child.proc.kill('SIGKILL');
    await gone;
  }
}
