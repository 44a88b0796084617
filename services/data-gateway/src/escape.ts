/**
 * The escaping scheme for JupyterHub user and group names placed into object prefixes and
 * storage policies. Hub names may hold any unicode, `@`, `.`, `/`, `*`, `$`; pasted raw they
 * could widen a grant (`*` and `?` are policy wildcards, `${aws:username}` a policy variable,
 * `..` and `/` change the path). So a name becomes ONE path segment over a tiny alphabet:
 *
 *   - `A-Z a-z 0-9 _ -` stay as they are;
 *   - every other UTF-8 byte, including `.`, `~`, `/`, `*`, `?`, `$`, `{`, `}`, becomes
 *     `~XX` (two upper-case hex digits).
 *
 * Examples: `alice` → `alice`, `a.b@uni.edu` → `a~2Eb~40uni~2Eedu`, `a*b` → `a~2Ab`,
 * `x/../y` → `x~2F~2E~2E~2Fy`, `Zoë` → `Zo~C3~AB`.
 *
 * It is reversible (`unescapeName`) and injective, the output never contains a character with
 * meaning in S3, GCS or Azure policies, and prefixes always end in `/`, so `home/alice/` is
 * never a prefix of `home/alice2/`.
 */

const SAFE = /^[A-Za-z0-9_-]$/;
const ENCODED = /^(?:[A-Za-z0-9_-]|~[0-9A-F]{2})+$/;

export function escapeName(name: string): string {
  if (name.length === 0) throw new RangeError('an empty name cannot be placed in a prefix');
  let out = '';
  for (const char of name) {
    if (SAFE.test(char)) {
      out += char;
      continue;
    }
    for (const byte of Buffer.from(char, 'utf8')) out += `~${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** The inverse of `escapeName`; throws on anything `escapeName` cannot produce. */
export function unescapeName(escaped: string): string {
  if (!ENCODED.test(escaped)) throw new RangeError('not an escaped name');
  const bytes: number[] = [];
  for (let i = 0; i < escaped.length; ) {
    if (escaped[i] === '~') {
      bytes.push(Number.parseInt(escaped.slice(i + 1, i + 3), 16));
      i += 3;
    } else {
      bytes.push(escaped.charCodeAt(i));
      i += 1;
    }
  }
  let decoded: string;
  try {
    decoded = new TextDecoder('utf-8', { fatal: true }).decode(Uint8Array.from(bytes));
  } catch {
    throw new RangeError('not an escaped name');
  }
  if (escapeName(decoded) !== escaped) throw new RangeError('not an escaped name');
  return decoded;
}

/** Placeholders a prefix template may hold. */
export const PLACEHOLDERS = ['username', 'group'] as const;
export type Placeholder = (typeof PLACEHOLDERS)[number];

// Literal parts of a template: plain path characters only; `..`, wildcards and `$` are refused.
const TEMPLATE = /^(?:[A-Za-z0-9_.\-/]|\{(?:username|group)\})*$/;

/** Why a prefix template is unsafe, or undefined when it is fine. */
export function templateProblem(template: string): string | undefined {
  if (template === '') return undefined; // the whole bucket
  if (!TEMPLATE.test(template)) return 'may hold only A-Z a-z 0-9 _ . - / and the placeholders {username} and {group}';
  if (!template.endsWith('/')) return 'must end with "/" so one name can never reach another (alice vs alice2)';
  if (template.startsWith('/')) return 'must not start with "/"';
  const segments = template.slice(0, -1).split('/');
  if (segments.some((s) => s === '' || s === '.' || s === '..')) return 'must not contain empty, "." or ".." segments';
  if (segments.some((s) => /\{(username|group)\}/.test(s) && s !== '{username}' && s !== '{group}')) {
    return 'a placeholder must be a whole path segment, e.g. home/{username}/';
  }
  if (template.includes('{username}') && template.includes('{group}')) return 'may use {username} or {group}, not both';
  return undefined;
}

export function templateUses(template: string): Placeholder | undefined {
  if (template.includes('{username}')) return 'username';
  if (template.includes('{group}')) return 'group';
  return undefined;
}

/** Fill a (validated) template; every value is escaped into one segment. */
export function expandTemplate(template: string, values: { username?: string; group?: string }): string {
  return template.replace(/\{(username|group)\}/g, (_m, key: Placeholder) => {
    const value = values[key];
    if (value === undefined) throw new RangeError(`no value for {${key}}`);
    return escapeName(value);
  });
}
