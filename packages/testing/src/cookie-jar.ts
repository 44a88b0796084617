interface StoredCookie {
  name: string;
  value: string;
  /** Host the cookie came from, or the Domain attribute when one was given. */
  domain: string;
  hostOnly: boolean;
  path: string;
  secure: boolean;
  expiresAt: number | undefined;
}

// Browsers treat loopback as a secure context, so Secure cookies work over plain http there.
// The hub and services under test only ever run on loopback.
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

/**
 * An RFC 6265 cookie store, reduced to what tests against loopback servers need. Cookies ignore
 * the port, as in browsers: a hub cookie set through the proxy also goes to the hub's own port.
 */
export class CookieJar {
  readonly #cookies = new Map<string, StoredCookie>();

  store(url: URL, setCookieHeaders: string[]): void {
    for (const header of setCookieHeaders) {
      const cookie = parseSetCookie(url, header);
      if (!cookie) continue;
      const key = `${cookie.domain};${cookie.path};${cookie.name}`;
      if (cookie.expiresAt !== undefined && cookie.expiresAt <= Date.now()) this.#cookies.delete(key);
      else this.#cookies.set(key, cookie);
    }
  }

  /** Cookies a browser would send to `url`, longest path first as RFC 6265 orders them. */
  matching(url: URL): StoredCookie[] {
    const now = Date.now();
    const host = url.hostname;
    const out: StoredCookie[] = [];
    for (const [key, cookie] of this.#cookies) {
      if (cookie.expiresAt !== undefined && cookie.expiresAt <= now) {
        this.#cookies.delete(key);
        continue;
      }
      if (cookie.hostOnly ? host !== cookie.domain : !domainMatches(host, cookie.domain)) continue;
      if (!pathMatches(url.pathname, cookie.path)) continue;
      if (cookie.secure && url.protocol !== 'https:' && !LOOPBACK.has(host)) continue;
      out.push(cookie);
    }
    return out.sort((a, b) => b.path.length - a.path.length);
  }

  header(url: URL): string | undefined {
    const cookies = this.matching(url);
    return cookies.length === 0 ? undefined : cookies.map((c) => `${c.name}=${c.value}`).join('; ');
  }
}

function parseSetCookie(url: URL, header: string): StoredCookie | undefined {
  const [pair = '', ...attributes] = header.split(';');
  const eq = pair.indexOf('=');
  if (eq <= 0) return undefined;
  const cookie: StoredCookie = {
    name: pair.slice(0, eq).trim(),
    value: stripQuotes(pair.slice(eq + 1).trim()),
    domain: url.hostname,
    hostOnly: true,
    path: defaultPath(url.pathname),
    secure: false,
    expiresAt: undefined,
  };
  let maxAgeSeen = false;
  for (const attribute of attributes) {
    const at = attribute.indexOf('=');
    const key = (at < 0 ? attribute : attribute.slice(0, at)).trim().toLowerCase();
    const value = at < 0 ? '' : attribute.slice(at + 1).trim();
    if (key === 'path' && value.startsWith('/')) cookie.path = value;
    else if (key === 'domain' && value) {
      const domain = value.replace(/^\./, '').toLowerCase();
      // A server may not set cookies for a domain it is not part of.
      if (!domainMatches(url.hostname, domain)) return undefined;
      cookie.domain = domain;
      cookie.hostOnly = false;
    } else if (key === 'secure') cookie.secure = true;
    else if (key === 'max-age' && /^-?\d+$/.test(value)) {
      maxAgeSeen = true;
      cookie.expiresAt = Date.now() + Number(value) * 1000;
    } else if (key === 'expires' && !maxAgeSeen) {
      const when = Date.parse(value);
      if (!Number.isNaN(when)) cookie.expiresAt = when;
    }
  }
  return cookie;
}

function stripQuotes(value: string): string {
  return value.length >= 2 && value.startsWith('"') && value.endsWith('"') ? value.slice(1, -1) : value;
}

function defaultPath(pathname: string): string {
  if (!pathname.startsWith('/')) return '/';
  const slash = pathname.lastIndexOf('/');
  return slash <= 0 ? '/' : pathname.slice(0, slash);
}

function domainMatches(host: string, domain: string): boolean {
  return host === domain || (host.endsWith(`.${domain}`) && !/^[\d.]+$/.test(host));
}

function pathMatches(requestPath: string, cookiePath: string): boolean {
  if (requestPath === cookiePath) return true;
  if (!requestPath.startsWith(cookiePath)) return false;
  return cookiePath.endsWith('/') || requestPath[cookiePath.length] === '/';
}
