import { CookieJar } from './cookie-jar.js';

export interface BrowserResponse {
  status: number;
  /** The URL that gave the final response. */
  url: string;
  /** Lower-case names; `set-cookie` is always an array. */
  headers: Record<string, string | string[]>;
  body: string;
  /** Every URL requested before the final one, in order; empty when nothing redirected. */
  redirects: string[];
}

/** A cookie-keeping HTTP client that follows redirects as a browser does (no JavaScript). */
export interface TestBrowser {
  /** A relative `url` resolves against the browser's base URL. */
  get(url: string, init?: { headers?: Record<string, string> }): Promise<BrowserResponse>;
  /**
   * Sends `form` urlencoded, then follows redirects (303/302 become GET, 307/308 re-post). An array
   * value repeats the field, as several inputs of one name do (JupyterHub's OAuth form has `scopes`).
   */
  post(url: string, form: Record<string, string | string[]>, init?: { headers?: Record<string, string> }): Promise<BrowserResponse>;
  cookies(url: string): Record<string, string>;
  /**
   * Redirects to a URL this matches are not followed: the response is the redirect itself, with
   * `url` set to its target. Lets a test catch a code on its way to a relying party that is not
   * listening (an OAuth `redirect_uri`), or stop at a chosen hop.
   */
  stopAt: RegExp | undefined;
}

export interface TestBrowserOptions {
  /** Where relative URLs resolve; without it, every URL must be absolute. */
  baseUrl?: string;
  stopAt?: RegExp;
}

/** The browser `hub.browser()` returns: a TestBrowser based at the hub's public URL. */
export interface HubBrowser extends TestBrowser {
  /** Logs in at /hub/login with the dummy authenticator and lands on /hub/home. */
  login(username: string, password?: string): Promise<void>;
}

const MAX_REDIRECTS = 20;
const REQUEST_TIMEOUT_MS = 30_000;

interface PendingRequest {
  method: string;
  url: URL;
  body: string | undefined;
  headers: Record<string, string>;
}

/** A standalone browser, for flows between servers that are not a hub (an IdP, an OAuth client). */
export function createTestBrowser(options: TestBrowserOptions = {}): TestBrowser {
  const jar = new CookieJar();
  // Like a browser following links, each request names the page it came from. JupyterHub checks
  // it: the OAuth confirmation form is refused without it, and so are cookie-authenticated API calls.
  let currentPage: string | undefined;
  const base = options.baseUrl === undefined ? undefined : `${options.baseUrl.replace(/\/+$/, '')}/`;
  const resolve = (url: string): URL => new URL(url, base);

  async function navigate(first: PendingRequest): Promise<BrowserResponse> {
    const redirects: string[] = [];
    let request = first;
    for (let hop = 0; ; hop += 1) {
      const headers: Record<string, string> = {
        accept: 'text/html,application/xhtml+xml,application/json;q=0.9,*/*;q=0.8',
        'user-agent': 'hubside-testing-browser',
        ...(currentPage === undefined ? {} : { referer: currentPage }),
        ...request.headers,
      };
      const cookie = jar.header(request.url);
      if (cookie) headers.cookie = cookie;
      const res = await fetch(request.url, {
        method: request.method,
        headers,
        body: request.body,
        redirect: 'manual',
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
      jar.store(request.url, res.headers.getSetCookie());
      const location = res.headers.get('location');
      const followable = res.status >= 300 && res.status < 400 && location !== null;
      const target = followable ? new URL(location, request.url) : undefined;
      if (!target || (target.protocol !== 'http:' && target.protocol !== 'https:')) {
        currentPage = request.url.href;
        return { status: res.status, url: request.url.href, headers: headerRecord(res.headers), body: await res.text(), redirects };
      }
      await res.body?.cancel();
      if (browser.stopAt?.test(target.href)) {
        redirects.push(request.url.href);
        currentPage = request.url.href;
        return { status: res.status, url: target.href, headers: headerRecord(res.headers), body: '', redirects };
      }
      if (hop >= MAX_REDIRECTS) throw new Error(`more than ${MAX_REDIRECTS} redirects, starting at ${first.url.href}`);
      redirects.push(request.url.href);
      const keepMethod = res.status === 307 || res.status === 308;
      request = keepMethod
        ? { ...request, url: target }
        : { method: 'GET', url: target, body: undefined, headers: withoutContentType(request.headers) };
    }
  }

  const browser: TestBrowser = {
    stopAt: options.stopAt,
    get: (url, init) => navigate({ method: 'GET', url: resolve(url), body: undefined, headers: init?.headers ?? {} }),
    post: (url, form, init) =>
      navigate({
        method: 'POST',
        url: resolve(url),
        body: encodeForm(form),
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...init?.headers },
      }),
    cookies(url) {
      return Object.fromEntries(jar.matching(resolve(url)).map((c) => [c.name, c.value]));
    },
  };
  return browser;
}

export function createBrowser(hubUrl: string): HubBrowser {
  const browser = createTestBrowser({ baseUrl: hubUrl }) as HubBrowser;
  browser.login = async (username, password = '') => {
    const loginUrl = `/hub/login?next=${encodeURIComponent('/hub/home')}`;
    let page = await browser.get(loginUrl);
    if (!new URL(page.url).pathname.endsWith('/hub/login')) {
      // Already logged in (the hub redirected past the form); start over as the asked-for user.
      await browser.get('/hub/logout');
      page = await browser.get(loginUrl);
    }
    if (page.status !== 200) throw new Error(`GET /hub/login answered ${page.status}`);
    const form = parseLoginForm(page.body);
    const fields: Record<string, string> = { username, password };
    // JupyterHub 3.0 has no _xsrf on the login form; later versions do, and reject posts without it.
    if (form.xsrf !== undefined) fields._xsrf = form.xsrf;
    const action = new URL(form.action ?? page.url, page.url);
    const done = await browser.post(action.href, fields);
    const landed = new URL(done.url);
    if (done.status !== 200 || !landed.pathname.endsWith('/hub/home')) {
      throw new Error(`login as ${JSON.stringify(username)} ended at ${done.url} with status ${done.status}`);
    }
  };
  return browser;
}

function encodeForm(form: Record<string, string | string[]>): string {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(form)) {
    for (const one of Array.isArray(value) ? value : [value]) params.append(name, one);
  }
  return params.toString();
}

function withoutContentType(headers: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).filter(([name]) => name.toLowerCase() !== 'content-type'));
}

function headerRecord(headers: Headers): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  headers.forEach((value, name) => {
    if (name !== 'set-cookie') out[name] = value;
  });
  out['set-cookie'] = headers.getSetCookie();
  return out;
}

function parseLoginForm(html: string): { action: string | undefined; xsrf: string | undefined } {
  const formTag = /<form\b[^>]*\baction\s*=\s*(["'])(.*?)\1/is.exec(html);
  let xsrf: string | undefined;
  for (const [input] of html.matchAll(/<input\b[^>]*>/gis)) {
    if (!/\bname\s*=\s*["']_xsrf["']/i.test(input)) continue;
    xsrf = /\bvalue\s*=\s*(["'])(.*?)\1/is.exec(input)?.[2];
  }
  return {
    action: formTag?.[2] === undefined ? undefined : unescapeHtml(formTag[2]),
    xsrf: xsrf === undefined ? undefined : unescapeHtml(xsrf),
  };
}

function unescapeHtml(text: string): string {
  return text
    .replace(/&#x([0-9a-f]+);/gi, (_, hex: string) => String.fromCodePoint(Number.parseInt(hex, 16)))
    .replace(/&#(\d+);/g, (_, dec: string) => String.fromCodePoint(Number(dec)))
    .replace(/&quot;/g, '"')
    .replace(/&#39;|&apos;/g, "'")
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
}
