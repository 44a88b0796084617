import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createBrowser } from './browser.js';
import type { HubBrowser } from './browser.js';
import { HARNESS_SCOPES, HARNESS_SERVICE, MARKER_VAR, WATCH_FD_VAR, renderConfig } from './hub-config.js';
import { REAPER_PY } from './reaper.js';
import type { HarnessSettings } from './hub-config.js';
import { freePorts } from './ports.js';
import { waitFor } from './poll.js';
import { hubProcesses, signal } from './processes.js';
import type { ProcessInfo } from './processes.js';

const JUPYTERHUB = '/usr/bin/jupyterhub';
// Debian's python, which has jupyterhub; the python3 on PATH may be a pyenv one without it.
const PYTHON = '/usr/bin/python3';
const SINGLEUSER = '/usr/bin/jupyterhub-singleuser';
const DEBIAN_NODE_PATH = '/usr/share/nodejs';
const START_ATTEMPTS = 3;
const API_TIMEOUT_MS = 15_000;
const SERVER_TIMEOUT_MS = 30_000;
// The hub stops servers and services itself (2 s interrupt timeout each, in parallel), then the
// reaper gives leftovers 3 s before SIGKILL; this bound sits above both.
const STOP_GRACE_MS = 10_000;
const KILL_WAIT_MS = 3_000;

export interface HubServiceSpec {
  name: string;
  /** e.g. http://127.0.0.1:<port>; the proxy routes /services/<name>/ there. */
  url?: string;
  /** Makes it a hub-managed service. */
  command?: string[];
  environment?: Record<string, string>;
  cwd?: string;
  /** Becomes the service's api_token; a managed service without one gets a generated token. */
  apiToken?: string;
  oauth_no_confirm?: boolean;
  oauth_client_allowed_scopes?: string[];
  oauth_redirect_uri?: string;
  display?: boolean;
}

export interface HubRole {
  name: string;
  scopes: string[];
  users?: string[];
  services?: string[];
  groups?: string[];
}

export interface StartHubOptions {
  services?: HubServiceSpec[];
  roles?: HubRole[];
  /** Created through the API before startHub resolves. Any other name may still log in. */
  users?: string[];
  admins?: string[];
  /** Group name to members; members that do not exist yet are created. */
  groups?: Record<string, string[]>;
  /** DummyAuthenticator.password; without it any password logs in. */
  password?: string;
  /**
   * Python appended to jupyterhub_config.py, after everything the harness sets. Extend
   * `c.JupyterHub.services` and `c.JupyterHub.load_roles` rather than replacing them: the
   * harness's own admin service lives there.
   */
  extraConfig?: string;
  /** Default: test-artifacts/hub-<port>.log under the repository root. */
  logFile?: string;
  /** Default 60 000. */
  startTimeoutMs?: number;
  /** Wait until every managed service with a url accepts HTTP before resolving; default true. */
  waitForServices?: boolean;
}

export interface ApiResult<T> {
  status: number;
  body: T;
}

export interface RunningHub {
  /** Public proxy URL, no trailing slash. */
  url: string;
  /** The hub's API as services see it: http://127.0.0.1:<hub port>/hub/api */
  hubApiUrl: string;
  /** Token of the `hubside-harness` service, which holds admin scopes. */
  adminToken: string;
  /**
   * PID of the supervisor that runs jupyterhub as its child: the leader of the hub's process group,
   * and the reaper of every process the hub starts. It exits once all of them are gone.
   */
  pid: number;
  /** The temp dir with jupyterhub_config.py, harness.json, the database and user homes. */
  dir: string;
  logFile: string;
  /**
   * `path` is relative to /hub/api. Without `token` the request uses `adminToken`; `null` sends no
   * Authorization header; an explicit `undefined` throws. The body is parsed JSON when the hub sent JSON.
   */
  api<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
    token?: string | null,
    headers?: Record<string, string>,
  ): Promise<ApiResult<T>>;
  /** Creates the user, or makes an existing one match `admin` when given. */
  createUser(name: string, opts?: { admin?: boolean }): Promise<void>;
  /** Creates the group (or adds to an existing one); missing members are created first. */
  createGroup(name: string, members?: string[]): Promise<void>;
  addToGroup(group: string, users: string[]): Promise<void>;
  /** Without `scopes` the token inherits all of the user's permissions. */
  createToken(user: string, opts?: { scopes?: string[]; note?: string; expiresIn?: number }): Promise<string>;
  /** Resolves once the hub reports the server ready (it is then routed through the proxy). */
  startServer(
    user: string,
    opts?: { name?: string; userOptions?: Record<string, unknown>; timeoutMs?: number },
  ): Promise<void>;
  stopServer(user: string, name?: string, opts?: { timeoutMs?: number }): Promise<void>;
  browser(): HubBrowser;
  /** Live processes that belong to this hub: the hub, proxy, single-user servers, managed services. */
  processes(): ProcessInfo[];
  /** The last `lines` lines of the hub's log. */
  logTail(lines?: number): string;
  /** Kills hub, proxy, single-user servers and managed services, then removes the temp dir. */
  stop(): Promise<void>;
}

interface LiveHub {
  pid: number;
  marker: string;
}

// Hubs still running in this process, for the synchronous exit hook below. This is process-wide
// by nature: the hook has to reach hubs whose tests crashed before calling stop().
const liveHubs = new Set<LiveHub>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const hub of liveHubs) killNow(hub);
  });
}

function killNow(hub: LiveHub): void {
  // The supervisor itself is spared: it reaps the rest and then exits, having seen its pipe close.
  for (const p of hubProcesses(hub.pid, hub.marker)) if (p.pid !== hub.pid) signal(p.pid, 'SIGKILL');
}

function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let depth = 0; depth < 8; depth += 1) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest)) {
      try {
        if ((JSON.parse(readFileSync(manifest, 'utf8')) as { workspaces?: unknown }).workspaces) return dir;
      } catch {
        // Not JSON we can read; keep climbing.
      }
    }
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  return process.cwd();
}

function tailOf(file: string, lines = 40): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no hub log)';
  }
}

function hubEnv(marker: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  // The hub must run Debian's Python and libraries, never a virtualenv or pyenv the tests run under.
  for (const name of ['PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV', 'CONDA_PREFIX', 'NODE_OPTIONS']) delete env[name];
  env.NODE_PATH = DEBIAN_NODE_PATH;
  env[MARKER_VAR] = marker;
  env[WATCH_FD_VAR] = '3';
  return env;
}

function serviceEntry(spec: HubServiceSpec, marker: string): Record<string, unknown> {
  const entry: Record<string, unknown> = { name: spec.name };
  if (spec.url !== undefined) entry.url = spec.url;
  if (spec.apiToken !== undefined) entry.api_token = spec.apiToken;
  if (spec.oauth_no_confirm !== undefined) entry.oauth_no_confirm = spec.oauth_no_confirm;
  if (spec.oauth_client_allowed_scopes !== undefined) entry.oauth_client_allowed_scopes = spec.oauth_client_allowed_scopes;
  if (spec.oauth_redirect_uri !== undefined) entry.oauth_redirect_uri = spec.oauth_redirect_uri;
  if (spec.display !== undefined) entry.display = spec.display;
  if (spec.command !== undefined) {
    entry.command = spec.command;
    if (spec.cwd !== undefined) entry.cwd = spec.cwd;
    // The hub hands a managed service little more than PATH and LANG; HOME matters to most
    // tooling. NODE_PATH stays out: it points at Debian's modules, which are only for the proxy.
    const base: Record<string, string> = {};
    for (const name of ['PATH', 'HOME', 'LANG', 'TZ', 'NODE_EXTRA_CA_CERTS']) {
      const value = process.env[name];
      if (value !== undefined) base[name] = value;
    }
    entry.environment = { ...base, ...spec.environment, [MARKER_VAR]: marker };
  } else if (spec.environment !== undefined) {
    entry.environment = spec.environment;
  }
  return entry;
}

function roleEntry(role: HubRole): Record<string, unknown> {
  const entry: Record<string, unknown> = { name: role.name, scopes: role.scopes };
  if (role.users !== undefined) entry.users = role.users;
  if (role.services !== undefined) entry.services = role.services;
  if (role.groups !== undefined) entry.groups = role.groups;
  return entry;
}

const ADDRESS_IN_USE = /EADDRINUSE|address already in use/i;

export async function startHub(opts: StartHubOptions = {}): Promise<RunningHub> {
  if (!existsSync(JUPYTERHUB)) throw new Error(`${JUPYTERHUB} not found; apt-get install -y jupyterhub`);
  let lastError: unknown;
  for (let attempt = 1; attempt <= START_ATTEMPTS; attempt += 1) {
    try {
      return await startOnce(opts);
    } catch (err) {
      lastError = err;
      // Free ports are only free until someone binds them; with parallel test files that race is
      // real, so a bind failure earns a fresh set of ports. Anything else is a genuine failure.
      if (!(err instanceof Error && ADDRESS_IN_USE.test(err.message))) throw err;
    }
  }
  throw lastError;
}

async function startOnce(opts: StartHubOptions): Promise<RunningHub> {
  const [publicPort, proxyApiPort, hubPort] = (await freePorts(3)) as [number, number, number];
  const dir = await mkdtemp(join(tmpdir(), 'hubside-hub-'));
  const marker = randomUUID();
  const adminToken = randomBytes(32).toString('hex');
  const url = `http://127.0.0.1:${publicPort}`;
  const hubApiUrl = `http://127.0.0.1:${hubPort}/hub/api`;
  const logFile = resolve(opts.logFile ?? join(repoRoot(), 'test-artifacts', `hub-${publicPort}.log`));

  const settings: HarnessSettings = {
    bindUrl: `${url}/`,
    hubBindUrl: `http://127.0.0.1:${hubPort}`,
    proxyApiUrl: `http://127.0.0.1:${proxyApiPort}`,
    proxyAuthToken: randomBytes(32).toString('hex'),
    marker,
    password: opts.password ?? null,
    singleuserCommand: [SINGLEUSER],
    services: [
      { name: HARNESS_SERVICE, api_token: adminToken, display: false },
      ...(opts.services ?? []).map((spec) => serviceEntry(spec, marker)),
    ],
    roles: [
      {
        name: HARNESS_SERVICE,
        description: 'The test harness: manages users, groups, tokens and servers',
        scopes: HARNESS_SCOPES,
        services: [HARNESS_SERVICE],
      },
      ...(opts.roles ?? []).map(roleEntry),
    ],
  };
  await writeFile(join(dir, 'harness.json'), JSON.stringify(settings, null, 2));
  await writeFile(join(dir, 'jupyterhub_config.py'), renderConfig(opts.extraConfig));
  await writeFile(join(dir, 'reaper.py'), REAPER_PY);
  await mkdir(dirname(logFile), { recursive: true });

  const logFd = openSync(logFile, 'w');
  let child: ChildProcess;
  try {
    child = spawn(PYTHON, [join(dir, 'reaper.py'), JUPYTERHUB, '-f', join(dir, 'jupyterhub_config.py')], {
      cwd: dir,
      env: hubEnv(marker),
      detached: true,
      // fd 3 is the watchdog pipe: the supervisor kills the tree when this end closes.
      stdio: ['ignore', logFd, logFd, 'pipe'],
    });
  } finally {
    closeSync(logFd);
  }
  let spawnError: Error | undefined;
  // Without a listener a failed spawn (no python) would be an uncaught 'error' event.
  child.once('error', (err) => {
    spawnError = err;
  });
  const pid = child.pid;
  if (pid === undefined) {
    await rm(dir, { recursive: true, force: true });
    throw new Error(`could not start ${PYTHON} ${JUPYTERHUB}${spawnError ? `: ${spawnError.message}` : ''}`);
  }
  const live: LiveHub = { pid, marker };
  liveHubs.add(live);
  installExitHook();
  // Neither the hub nor its pipe should keep a finished test run alive; the exit hook and the
  // watchdog clean up instead.
  child.unref();
  (child.stdio[3] as Socket | null)?.unref();

  let exited = false;
  const exitedEarly = new AbortController();
  child.once('exit', (code, sig) => {
    exited = true;
    liveHubs.delete(live);
    exitedEarly.abort(new Error(`jupyterhub exited (${sig ?? `code ${code}`}) before it was ready; log ${logFile}:\n${tailOf(logFile)}`));
  });

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      // SIGTERM goes to the supervisor alone, which hands it to the hub: a second copy through the
      // process group would start the hub's shutdown twice. The hub stops its servers, services
      // and proxy; the supervisor sweeps up the rest and exits once every descendant is reaped.
      signal(pid, 'SIGTERM');
      const gone = async (): Promise<boolean> => exited;
      try {
        await waitFor(gone, { timeoutMs: STOP_GRACE_MS, intervalMs: 20, what: 'the hub to shut down after SIGTERM' });
      } catch {
        signal(-pid, 'SIGKILL');
        for (const p of hubProcesses(pid, marker)) signal(p.pid, 'SIGKILL');
        await waitFor(gone, { timeoutMs: KILL_WAIT_MS, intervalMs: 20, what: 'the hub to exit after SIGKILL' });
      } finally {
        liveHubs.delete(live);
        (child.stdio[3] as Socket | null)?.destroy();
        await rm(dir, { recursive: true, force: true });
      }
    })();
    return stopping;
  };

  // A token argument that is present but undefined is a bug in the caller (a token that was never
  // issued), and quietly answering it with admin rights would hide exactly that.
  async function api<T>(
    method: string,
    path: string,
    body?: unknown,
    token?: string | null,
    headers: Record<string, string> = {},
  ): Promise<ApiResult<T>> {
    if (arguments.length >= 4 && token === undefined) {
      throw new Error(`api(${method} ${path}): token is undefined; omit it for the admin token, or pass null for none`);
    }
    const auth = token === null ? undefined : (token ?? adminToken);
    const res = await fetch(`${hubApiUrl}${path.startsWith('/') ? path : `/${path}`}`, {
      method,
      headers: {
        ...(auth === undefined ? {} : { authorization: `token ${auth}` }),
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(API_TIMEOUT_MS),
    });
    const text = await res.text();
    let parsed: unknown = text;
    if (text === '') parsed = undefined;
    else if ((res.headers.get('content-type') ?? '').includes('json')) parsed = JSON.parse(text);
    return { status: res.status, body: parsed as T };
  }

  const hub = buildHub({ url, hubApiUrl, adminToken, pid, dir, logFile, marker, api, stop });

  try {
    await waitFor(
      async () => {
        // The proxy does not take the hub down when its port is taken, so look for that in the log.
        if (ADDRESS_IN_USE.test(tailOf(logFile, 200))) {
          exitedEarly.abort(new Error(`a port was taken before the hub could bind it; log ${logFile}:\n${tailOf(logFile)}`));
        }
        const [direct, proxied] = await Promise.all([
          fetch(`${hubApiUrl}/`, { signal: AbortSignal.timeout(2_000) }),
          // Asking who we are through the proxy proves the route leads to this hub, not to some
          // other process that won a race for the port.
          fetch(`${url}/hub/api/user`, { headers: { authorization: `token ${adminToken}` }, signal: AbortSignal.timeout(2_000) }),
        ]);
        const identity = proxied.ok ? ((await proxied.json()) as { name?: string }).name : undefined;
        await Promise.all([direct.body?.cancel(), proxied.bodyUsed ? undefined : proxied.body?.cancel()]);
        return direct.ok && identity === HARNESS_SERVICE;
      },
      { timeoutMs: opts.startTimeoutMs ?? 60_000, intervalMs: 50, what: `JupyterHub at ${url}`, signal: exitedEarly.signal },
    );
    if (opts.waitForServices ?? true) {
      for (const service of opts.services ?? []) {
        if (!service.command || !service.url) continue;
        const serviceUrl = service.url;
        await waitFor(
          async () => {
            const res = await fetch(serviceUrl, { signal: AbortSignal.timeout(2_000) });
            await res.body?.cancel();
            return true;
          },
          { timeoutMs: opts.startTimeoutMs ?? 60_000, what: `managed service ${service.name} at ${serviceUrl}`, signal: exitedEarly.signal },
        );
      }
    }
    await seed(hub, opts);
  } catch (err) {
    await stop().catch(() => undefined);
    if (err instanceof Error && !exited) err.message += `\nhub log ${logFile}:\n${tailOf(logFile)}`;
    throw err;
  }
  return hub;
}

async function seed(hub: RunningHub, opts: StartHubOptions): Promise<void> {
  for (const name of opts.users ?? []) await hub.createUser(name);
  for (const name of opts.admins ?? []) await hub.createUser(name, { admin: true });
  for (const [group, members] of Object.entries(opts.groups ?? {})) await hub.createGroup(group, members);
}

/** What a started hub process gives buildHub, which adds the convenience methods on top. */
type HubParts = Pick<RunningHub, 'url' | 'hubApiUrl' | 'adminToken' | 'pid' | 'dir' | 'logFile' | 'api' | 'stop'> & {
  marker: string;
};

interface UserModel {
  name: string;
  admin: boolean;
  servers?: Record<string, { ready: boolean; pending: string | null; url: string }>;
}

function seg(name: string): string {
  return encodeURIComponent(name);
}

function fail(what: string, res: ApiResult<unknown>): Error {
  const message =
    typeof res.body === 'object' && res.body !== null && 'message' in res.body ? String(res.body.message) : JSON.stringify(res.body);
  return new Error(`${what}: HTTP ${res.status} ${message}`);
}

function buildHub(parts: HubParts): RunningHub {
  const { api, logFile } = parts;

  const serverPath = (user: string, name: string): string =>
    name === '' ? `/users/${seg(user)}/server` : `/users/${seg(user)}/servers/${seg(name)}`;

  const serverModel = async (user: string, name: string) => {
    const res = await api<UserModel>('GET', `/users/${seg(user)}`);
    if (res.status !== 200) throw fail(`GET user ${user}`, res);
    return res.body.servers?.[name];
  };

  const userExists = async (name: string): Promise<boolean> => {
    const res = await api('GET', `/users/${seg(name)}`);
    if (res.status === 200) return true;
    if (res.status === 404) return false;
    throw fail(`GET user ${name}`, res);
  };

  const hub: RunningHub = {
    url: parts.url,
    hubApiUrl: parts.hubApiUrl,
    adminToken: parts.adminToken,
    pid: parts.pid,
    dir: parts.dir,
    logFile,
    api,

    async createUser(name, opts = {}) {
      const body = opts.admin === undefined ? undefined : { admin: opts.admin };
      const res = await api('POST', `/users/${seg(name)}`, body);
      if (res.status === 201) return;
      if (res.status === 409) {
        if (opts.admin === undefined) return;
        const patched = await api('PATCH', `/users/${seg(name)}`, { admin: opts.admin });
        if (patched.status === 200) return;
        throw fail(`set admin=${opts.admin} on user ${name}`, patched);
      }
      throw fail(`create user ${name}`, res);
    },

    async createGroup(name, members = []) {
      // The hub refuses a group whose members do not exist yet.
      for (const member of members) if (!(await userExists(member))) await hub.createUser(member);
      const res = await api('POST', `/groups/${seg(name)}`, { users: members });
      if (res.status === 201) return;
      if (res.status === 409) {
        if (members.length > 0) await hub.addToGroup(name, members);
        return;
      }
      throw fail(`create group ${name}`, res);
    },

    async addToGroup(group, users) {
      const res = await api('POST', `/groups/${seg(group)}/users`, { users });
      if (res.status !== 200) throw fail(`add ${users.join(', ')} to group ${group}`, res);
    },

    async createToken(user, opts = {}) {
      const body: Record<string, unknown> = {};
      if (opts.scopes !== undefined) body.scopes = opts.scopes;
      if (opts.note !== undefined) body.note = opts.note;
      if (opts.expiresIn !== undefined) body.expires_in = opts.expiresIn;
      const res = await api<{ token?: string }>('POST', `/users/${seg(user)}/tokens`, body);
      if (res.status !== 201 || typeof res.body?.token !== 'string') throw fail(`create token for ${user}`, res);
      return res.body.token;
    },

    async startServer(user, opts = {}) {
      const name = opts.name ?? '';
      const res = await api('POST', serverPath(user, name), opts.userOptions ?? {});
      if (res.status === 404) throw fail(`start server ${user}/${name} (no such user; create it first)`, res);
      if (res.status !== 201 && res.status !== 202) {
        const err = fail(`start server ${user}/${name}`, res);
        err.message += `\nhub log ${logFile}:\n${tailOf(logFile)}`;
        throw err;
      }
      await waitFor(
        async () => {
          const server = await serverModel(user, name);
          // A failed spawn drops the server from the model without it ever becoming ready.
          if (!server) throw new Error(`server ${user}/${name} went away before it was ready; hub log ${logFile}:\n${tailOf(logFile)}`);
          return server.ready;
        },
        { timeoutMs: opts.timeoutMs ?? SERVER_TIMEOUT_MS, intervalMs: 100, what: `server ${user}/${name} to be ready` },
      ).catch((err: unknown) => {
        if (err instanceof Error && !err.message.includes('hub log')) err.message += `\nhub log ${logFile}:\n${tailOf(logFile)}`;
        throw err;
      });
    },

    async stopServer(user, name = '', opts = {}) {
      const res = await api('DELETE', serverPath(user, name));
      // 400 means "not running", which is where we want to end up.
      if (res.status !== 202 && res.status !== 204 && res.status !== 400) throw fail(`stop server ${user}/${name}`, res);
      await waitFor(async () => (await serverModel(user, name)) === undefined, {
        timeoutMs: opts.timeoutMs ?? SERVER_TIMEOUT_MS,
        intervalMs: 100,
        what: `server ${user}/${name} to stop`,
      });
    },

    browser: () => createBrowser(parts.url),
    processes: () => hubProcesses(parts.pid, parts.marker),
    logTail: (lines = 40) => tailOf(logFile, lines),
    stop: parts.stop,
  };
  return hub;
}
