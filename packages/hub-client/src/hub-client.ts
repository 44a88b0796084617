import { setTimeout as delay } from 'node:timers/promises';
import { Agent, errors as undiciErrors, request } from 'undici';
import type { Dispatcher } from 'undici';
import { HubApiError, HubUnavailableError } from './errors.js';
import type { HubGroup, HubToken, HubTokenOwner, HubUser, Paginated } from './models.js';

export interface HubCallEvent {
  /** A route template such as `GET /users/{name}`: never a user name, so safe as a metric label. */
  route: string;
  status: number | 'error';
  durationMs: number;
  attempt: number;
}

export interface HubClientOptions {
  /** The hub's API root, as in JUPYTERHUB_API_URL, e.g. `http://127.0.0.1:8081/hub/api`. */
  apiUrl: string;
  /** This service's own API token (JUPYTERHUB_API_TOKEN). */
  token: string;
  /** Per attempt. */
  timeoutMs?: number;
  /** Extra attempts after the first, for connection errors and 5xx. */
  retries?: number;
  retryBaseMs?: number;
  /** Upper bound on sockets to the hub, so a storm of requests cannot exhaust it. */
  connections?: number;
  observe?: (event: HubCallEvent) => void;
}

interface CallOptions {
  route: string;
  token?: string;
  body?: unknown;
  query?: Record<string, string | number | boolean | undefined>;
  accept?: string;
  /** May a 5xx or timeout be retried? Only when repeating the request cannot do harm. */
  idempotent: boolean;
}

interface HubResponse<T> {
  status: number;
  body: T;
}

const PAGINATION_ACCEPT = 'application/jupyterhub-pagination+json';
const RETRYABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH']);
// Connection refused means the request never reached the hub, so even a POST may be repeated.
const NEVER_SENT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'UND_ERR_CONNECT_TIMEOUT']);

function errorCode(err: unknown): string | undefined {
  let e: unknown = err;
  // undici wraps the socket error; walk the cause chain a bounded number of steps.
  for (let i = 0; i < 4 && e && typeof e === 'object'; i += 1) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code !== 'UND_ERR_SOCKET') return code;
    e = (e as { cause?: unknown }).cause;
  }
  return (err as { code?: string } | undefined)?.code;
}

function encode(segment: string): string {
  return encodeURIComponent(segment);
}

/**
 * A typed client for the JupyterHub REST API. One instance per service; it keeps a bounded
 * keep-alive pool to the hub.
 */
export class HubClient {
  readonly apiUrl: string;
  readonly #token: string;
  readonly #timeoutMs: number;
  readonly #retries: number;
  readonly #retryBaseMs: number;
  readonly #agent: Agent;
  readonly #observe: ((event: HubCallEvent) => void) | undefined;

  constructor(opts: HubClientOptions) {
    const url = new URL(opts.apiUrl);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new TypeError(`JupyterHub API URL must be http(s), got ${url.protocol}`);
    }
    this.apiUrl = opts.apiUrl.replace(/\/+$/, '');
    this.#token = opts.token;
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
    this.#retries = opts.retries ?? 3;
    this.#retryBaseMs = opts.retryBaseMs ?? 100;
    this.#observe = opts.observe;
    this.#agent = new Agent({
      connections: opts.connections ?? 32,
      keepAliveTimeout: 10_000,
      connect: { timeout: this.#timeoutMs },
    });
  }

  /** The origin+path of the hub's public pages, derived from the API URL (`…/hub/api` → `…/hub/`). */
  get hubUrl(): string {
    return this.apiUrl.replace(/\/api$/, '/');
  }

  async close(): Promise<void> {
    await this.#agent.close();
  }

  async #once<T>(method: Dispatcher.HttpMethod, path: string, opts: CallOptions): Promise<HubResponse<T>> {
    const url = new URL(this.apiUrl + path);
    for (const [k, v] of Object.entries(opts.query ?? {})) {
      if (v !== undefined) url.searchParams.set(k, String(v));
    }
    const headers: Record<string, string> = {
      authorization: `token ${opts.token ?? this.#token}`,
      accept: opts.accept ?? 'application/json',
    };
    let body: string | undefined;
    if (opts.body !== undefined) {
      body = JSON.stringify(opts.body);
      headers['content-type'] = 'application/json';
    }
    const res = await request(url, {
      method,
      headers,
      body,
      dispatcher: this.#agent,
      headersTimeout: this.#timeoutMs,
      bodyTimeout: this.#timeoutMs,
      signal: AbortSignal.timeout(this.#timeoutMs),
    });
    if (res.statusCode === 204 || method === 'HEAD') {
      await res.body.dump();
      return { status: res.statusCode, body: undefined as T };
    }
    const text = await res.body.text();
    let parsed: unknown = undefined;
    if (text.length > 0) {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = undefined;
      }
    }
    return { status: res.statusCode, body: parsed as T };
  }

  /**
   * One API call with retries. Resolves with any status below 500; 5xx and connection
   * failures that outlast the retries become HubUnavailableError.
   */
  async call<T>(method: Dispatcher.HttpMethod, path: string, opts: CallOptions): Promise<HubResponse<T>> {
    let lastProblem = 'no attempt made';
    for (let attempt = 0; attempt <= this.#retries; attempt += 1) {
      if (attempt > 0) {
        const cap = Math.min(2_000, this.#retryBaseMs * 2 ** (attempt - 1));
        await delay(cap / 2 + Math.random() * (cap / 2));
      }
      const started = performance.now();
      try {
        const res = await this.#once<T>(method, path, opts);
        this.#observe?.({ route: opts.route, status: res.status, durationMs: performance.now() - started, attempt });
        if (res.status < 500) return res;
        lastProblem = `${opts.route} answered ${res.status}`;
        if (!opts.idempotent) break;
      } catch (err) {
        this.#observe?.({ route: opts.route, status: 'error', durationMs: performance.now() - started, attempt });
        const code = errorCode(err);
        const timedOut =
          err instanceof undiciErrors.HeadersTimeoutError ||
          err instanceof undiciErrors.BodyTimeoutError ||
          (err as Error | undefined)?.name === 'TimeoutError' ||
          code === 'UND_ERR_CONNECT_TIMEOUT';
        lastProblem = timedOut ? `${opts.route} timed out after ${this.#timeoutMs} ms` : `${opts.route} failed: ${code ?? (err as Error).message}`;
        const retryable = NEVER_SENT_CODES.has(code ?? '') || (opts.idempotent && (timedOut || RETRYABLE_CODES.has(code ?? '') || code === undefined));
        if (!retryable) break;
      }
    }
    throw new HubUnavailableError(lastProblem);
  }

  /** Throw HubApiError, with the hub's own message, unless the status is one of `ok`. */
  #expectStatus(res: HubResponse<unknown>, method: string, route: string, ok: readonly number[]): void {
    if (ok.includes(res.status)) return;
    const message = (res.body as { message?: unknown } | undefined)?.message;
    throw new HubApiError(method, route, res.status, typeof message === 'string' ? message : undefined);
  }

  async #json<T>(method: Dispatcher.HttpMethod, path: string, opts: CallOptions, ok: number[] = [200, 201]): Promise<T> {
    const res = await this.call<T>(method, path, opts);
    this.#expectStatus(res, method, opts.route, ok);
    return res.body;
  }

  /** GET one resource; null when the hub says it does not exist. */
  async #getOrNull<T>(path: string, route: string): Promise<T | null> {
    const res = await this.call<T>('GET', path, { route, idempotent: true });
    if (res.status === 404) return null;
    this.#expectStatus(res, 'GET', route, [200]);
    return res.body;
  }

  /**
   * Who owns `token`? Returns null when the hub rejects it (unknown, expired or revoked).
   * The request is made with the token itself, as JupyterHub's HubAuth does.
   */
  async identify(token: string): Promise<HubTokenOwner | null> {
    const res = await this.call<HubTokenOwner>('GET', '/user', { route: 'GET /user', token, idempotent: true });
    if (res.status === 401 || res.status === 403) return null;
    if (res.status !== 200 || !res.body || typeof res.body.name !== 'string') {
      throw new HubApiError('GET', 'GET /user', res.status, undefined);
    }
    return res.body;
  }

  async *#paginate<T>(path: string, route: string, query: Record<string, string | number | undefined>, pageSize: number): AsyncGenerator<T> {
    let offset = 0;
    // A hub has a finite number of rows; the bound only guards against a misbehaving server.
    for (let page = 0; page < 100_000; page += 1) {
      const body = await this.#json<Paginated<T> | T[]>('GET', path, {
        route,
        idempotent: true,
        accept: PAGINATION_ACCEPT,
        query: { ...query, offset, limit: pageSize },
      });
      if (Array.isArray(body)) {
        // A hub without pagination support answers with a plain list of everything.
        yield* body;
        return;
      }
      yield* body.items;
      const next = body._pagination?.next;
      if (!next || body.items.length === 0) return;
      offset = next.offset;
    }
  }

  /** Every user, optionally only those with a server in `state` (`active`, `ready`, `inactive`). */
  listUsers(opts: { state?: 'active' | 'ready' | 'inactive'; pageSize?: number } = {}): AsyncGenerator<HubUser> {
    return this.#paginate<HubUser>('/users', 'GET /users', { state: opts.state }, opts.pageSize ?? 200);
  }

  listGroups(opts: { pageSize?: number } = {}): AsyncGenerator<HubGroup> {
    return this.#paginate<HubGroup>('/groups', 'GET /groups', {}, opts.pageSize ?? 200);
  }

  getUser(name: string): Promise<HubUser | null> {
    return this.#getOrNull<HubUser>(`/users/${encode(name)}`, 'GET /users/{name}');
  }

  getGroup(name: string): Promise<HubGroup | null> {
    return this.#getOrNull<HubGroup>(`/groups/${encode(name)}`, 'GET /groups/{name}');
  }

  /** Start a server; resolves with 201 (started) or 202 (spawn pending). */
  async startServer(user: string, opts: { serverName?: string; userOptions?: Record<string, unknown> } = {}): Promise<{ status: number }> {
    const path = opts.serverName
      ? `/users/${encode(user)}/servers/${encode(opts.serverName)}`
      : `/users/${encode(user)}/server`;
    const route = opts.serverName ? 'POST /users/{name}/servers/{server}' : 'POST /users/{name}/server';
    const res = await this.call<unknown>('POST', path, { route, idempotent: false, body: opts.userOptions ?? {} });
    this.#expectStatus(res, 'POST', route, [201, 202]);
    return { status: res.status };
  }

  /** Stop a server; resolves with 204 (stopped) or 202 (stop pending). */
  async stopServer(user: string, opts: { serverName?: string; remove?: boolean } = {}): Promise<{ status: number }> {
    const path = opts.serverName
      ? `/users/${encode(user)}/servers/${encode(opts.serverName)}`
      : `/users/${encode(user)}/server`;
    const route = opts.serverName ? 'DELETE /users/{name}/servers/{server}' : 'DELETE /users/{name}/server';
    const res = await this.call<unknown>('DELETE', path, {
      route,
      idempotent: true,
      body: opts.serverName && opts.remove ? { remove: true } : undefined,
    });
    this.#expectStatus(res, 'DELETE', route, [202, 204]);
    return { status: res.status };
  }

  /**
   * Finish the hub's OAuth flow: exchange an authorization code for the user's access token.
   * The client secret is this service's API token, as JupyterHub registers it.
   */
  async exchangeOAuthCode(opts: { code: string; clientId: string; redirectUri: string }): Promise<string> {
    const url = `${this.apiUrl}/oauth2/token`;
    const started = performance.now();
    let res: Dispatcher.ResponseData;
    try {
      res = await request(url, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: new URLSearchParams({
          grant_type: 'authorization_code',
          code: opts.code,
          client_id: opts.clientId,
          client_secret: this.#token,
          redirect_uri: opts.redirectUri,
        }).toString(),
        dispatcher: this.#agent,
        headersTimeout: this.#timeoutMs,
        bodyTimeout: this.#timeoutMs,
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (err) {
      this.#observe?.({ route: 'POST /oauth2/token', status: 'error', durationMs: performance.now() - started, attempt: 0 });
      throw new HubUnavailableError(`POST /oauth2/token failed: ${errorCode(err) ?? (err as Error).message}`);
    }
    this.#observe?.({ route: 'POST /oauth2/token', status: res.statusCode, durationMs: performance.now() - started, attempt: 0 });
    const body = (await res.body.json().catch(() => undefined)) as { access_token?: unknown; error_description?: unknown; error?: unknown } | undefined;
    if (res.statusCode >= 500) throw new HubUnavailableError(`POST /oauth2/token answered ${res.statusCode}`);
    if (res.statusCode !== 200 || typeof body?.access_token !== 'string') {
      const why = body?.error_description ?? body?.error;
      throw new HubApiError('POST', 'POST /oauth2/token', res.statusCode, typeof why === 'string' ? why : undefined);
    }
    return body.access_token;
  }

  /** Create an API token for `user`. The hub refuses scopes the caller does not itself hold. */
  async createToken(user: string, opts: { scopes?: string[]; note?: string; expiresIn?: number } = {}): Promise<HubToken & { token: string }> {
    return this.#json<HubToken & { token: string }>('POST', `/users/${encode(user)}/tokens`, {
      route: 'POST /users/{name}/tokens',
      idempotent: false,
      body: { note: opts.note ?? 'hubside', expires_in: opts.expiresIn, scopes: opts.scopes },
    });
  }
}
