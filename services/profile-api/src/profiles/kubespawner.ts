import safeRegex from 'safe-regex2';

/**
 * What the hub's Python does with a saved document, checked when it is saved: KubeSpawner runs
 * `validation_regex` with Python's `re`, formats unlisted overrides with `str.format_map`, and
 * assigns overrides to traitlets that refuse a value of the wrong type. Anything JavaScript would
 * read one way and Python another is refused here, so resolve, the spawn page and the spawner agree.
 */

// ---- validation_regex: the subset Python's re and JavaScript's RegExp (u flag) read alike ----

const META = new Set(['\\', '^', '$', '.', '|', '?', '*', '+', '(', ')', '[', ']', '{', '}']);
// Escapes outside a class that mean "this character" in both engines (JS's u flag allows only these).
const ESCAPABLE = new Set([...META, '/']);
// Inside a class: what must be escaped to be literal.
const CLASS_ESCAPABLE = new Set(['\\', ']', '[', '-', '^']);
const CLASS_ESCAPES_HINT = 'use an explicit ASCII class such as [0-9], [A-Za-z0-9_] or [ ] instead';
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

class RegexSubsetError extends Error {}

/**
 * Why `pattern` is outside the subset both engines agree on, or undefined. The subset: literal
 * characters, `.`, `^`, `$`, `|`, groups `( )` and `(?: )`, classes `[...]`/`[^...]` of characters
 * and ranges, quantifiers `* + ? {n} {n,} {n,m}` (optionally lazy), and backslash before a
 * metacharacter. Not: `\d \w \s \b` (Unicode in Python, ASCII in JavaScript), lookaround,
 * backreferences, named groups, inline flags, `\p{..}`, bare braces or brackets.
 * Unlisted values with line breaks or control characters are refused before matching, which is
 * what makes `.` and `$` agree (Python's `$` also matches before a final newline).
 */
export function regexProblem(pattern: string): string | undefined {
  if (CONTROL.test(pattern)) return 'must not contain control characters';
  let i = 0;
  const peek = () => pattern[i];
  const fail = (msg: string): never => {
    throw new RegexSubsetError(`${msg} (at position ${i})`);
  };
  const quantifier = (quantifiable: boolean) => {
    const c = peek();
    let quantified = false;
    if (c === '*' || c === '+' || c === '?') {
      i += 1;
      quantified = true;
    } else if (c === '{') {
      const m = /^\{(\d{1,4})(,(\d{1,4})?)?\}/.exec(pattern.slice(i));
      if (!m) fail('a "{" that is not a repetition {n}, {n,} or {n,m} must be written \\{');
      const lo = Number(m![1]);
      const hi = m![3] === undefined ? undefined : Number(m![3]);
      if (hi !== undefined && hi < lo) fail(`the repetition ${m![0]} counts down`);
      if (lo > 1000 || (hi ?? 0) > 1000) fail('repetitions are at most 1000');
      i += m![0].length;
      quantified = true;
    }
    if (!quantified) return;
    if (!quantifiable) fail('a repetition must follow something to repeat');
    if (peek() === '?') i += 1;
    const next = peek();
    if (next === '*' || next === '+' || next === '?' || next === '{') fail('a repetition cannot be repeated (possessive quantifiers are Python-only)');
  };
  const classBody = () => {
    // After "[" (and "^"): at least one item, then "]".
    let items = 0;
    let prev = '';
    for (;;) {
      const c = peek();
      if (c === undefined) fail('a "[" is never closed');
      if (c === ']') {
        if (items === 0) fail('an empty class "[]" means different things in Python and JavaScript; escape "]" as \\]');
        i += 1;
        return;
      }
      if (c === '[') fail('a "[" inside a class must be written \\[');
      let ch: string;
      if (c === '\\') {
        const e = pattern[i + 1];
        if (e === undefined) fail('a pattern cannot end with "\\"');
        if (!CLASS_ESCAPABLE.has(e!)) fail(`"\\${e}" inside a class is not supported: ${CLASS_ESCAPES_HINT}`);
        ch = e!;
        i += 2;
      } else {
        const cp = pattern.codePointAt(i)!;
        ch = String.fromCodePoint(cp);
        i += ch.length;
        if (ch === '-' && items > 0 && peek() !== ']') {
          // A range: prev-next.
          const n = peek()!;
          let hi: string;
          if (n === '\\') {
            const e = pattern[i + 1];
            if (e === undefined || !CLASS_ESCAPABLE.has(e)) fail(`"\\${e ?? ''}" inside a class is not supported: ${CLASS_ESCAPES_HINT}`);
            hi = e!;
            i += 2;
          } else {
            if (n === '-' || n === '[') fail('write a literal "-" first or last in a class');
            hi = String.fromCodePoint(pattern.codePointAt(i)!);
            i += hi.length;
          }
          if (prev === '' || prev === '-') fail('a range needs a character on each side of "-"');
          if (hi.codePointAt(0)! < prev.codePointAt(0)!) fail(`the range ${prev}-${hi} is out of order`);
          prev = '';
          items += 1;
          continue;
        }
        if ((ch === '&' || ch === '~' || ch === '|' || ch === '-') && prev === ch) fail(`"${ch}${ch}" in a class is a set operation to Python; escape or reorder it`);
      }
      prev = ch;
      items += 1;
    }
  };
  const alternation = (depth: number): void => {
    if (depth > 20) fail('groups are nested too deeply');
    sequence(depth);
    while (peek() === '|') {
      i += 1;
      sequence(depth);
    }
  };
  const sequence = (depth: number): void => {
    for (;;) {
      const c = peek();
      if (c === undefined || c === '|' || c === ')') return;
      if (c === '(') {
        i += 1;
        if (peek() === '?') {
          if (pattern[i + 1] !== ':') fail('only "(?:" groups are supported (no lookaround, named groups or inline flags)');
          i += 2;
        }
        alternation(depth + 1);
        if (peek() !== ')') fail('a "(" is never closed');
        i += 1;
        quantifier(true);
      } else if (c === '[') {
        i += 1;
        if (peek() === '^') i += 1;
        classBody();
        quantifier(true);
      } else if (c === '^' || c === '$') {
        i += 1;
        quantifier(false);
      } else if (c === '.') {
        i += 1;
        quantifier(true);
      } else if (c === '\\') {
        const e = pattern[i + 1];
        if (e === undefined) fail('a pattern cannot end with "\\"');
        if (!ESCAPABLE.has(e!)) {
          fail(/[dDwWsSbB]/.test(e!) ? `"\\${e}" matches Unicode in Python but ASCII in JavaScript: ${CLASS_ESCAPES_HINT}` : `the escape "\\${e}" is not supported; escape only metacharacters`);
        }
        i += 2;
        quantifier(true);
      } else if (c === '*' || c === '+' || c === '?' || c === '{') {
        quantifier(false);
      } else if (c === ']' || c === '}') {
        fail(`a bare "${c}" must be written \\${c}`);
      } else {
        i += String.fromCodePoint(pattern.codePointAt(i)!).length;
        quantifier(true);
      }
    }
  };
  try {
    alternation(0);
    if (i < pattern.length) fail('a ")" has no "("');
  } catch (err) {
    if (err instanceof RegexSubsetError) return `is outside the regular expressions Python and JavaScript read alike: ${err.message}`;
    throw err;
  }
  try {
    new RegExp(pattern, 'u');
  } catch (err) {
    return `is not a valid regular expression: ${(err as Error).message}`;
  }
  // Star height above one (a repetition inside a repetition) is the classic exponential case.
  if (!safeRegex(pattern)) return 'may take exponential time on some inputs (a repetition inside a repetition, or too many repetitions)';
  return undefined;
}

/** Characters refused in an unlisted value: with them gone, `.` and `$` mean the same in both engines. */
export function unlistedValueProblem(value: string): string | undefined {
  return CONTROL.test(value) ? 'must not contain line breaks or control characters' : undefined;
}

// ---- {value} in unlisted overrides: str.format_map(IgnoreMissing(value=...)) ----

/**
 * Why Python's `str.format_map` would read `s` differently from plain `{value}` substitution, or
 * undefined. We allow exactly `{value}`, `{{` and `}}`: anything else with a brace either raises
 * in KubeSpawner (`a{b`, `}`) or formats differently (`{value.upper}`, `{value:>10}`, `{value[0]}`,
 * `{value!r}`), and a missing name like `{other}` is almost always a typo.
 */
export function formatProblem(s: string): string | undefined {
  for (let i = 0; i < s.length; i += 1) {
    const c = s[i];
    if (c === '{') {
      if (s[i + 1] === '{') i += 1;
      else if (s.startsWith('{value}', i)) i += 6;
      else return `uses "${s.slice(i, i + 20)}": only {value} is substituted (write {{ and }} for literal braces)`;
    } else if (c === '}') {
      if (s[i + 1] === '}') i += 1;
      else return 'has a lone "}" (write }} for a literal brace)';
    }
  }
  return undefined;
}

/** Does `s` substitute the value (not counting escaped braces)? */
export function substitutesValue(s: string): boolean {
  return s.replace(/\{\{|\}\}/g, '').includes('{value}');
}

// ---- trait types (KubeSpawner 7 and JupyterHub's Spawner) ----

type TraitType = 'float' | 'int' | 'bool' | 'bytes' | 'str' | 'dict' | 'list';

/** The traits an override commonly sets, by the type their traitlet accepts. Others are not checked. */
export const TRAIT_TYPES: Readonly<Record<string, TraitType>> = Object.freeze(
  Object.assign(Object.create(null) as Record<string, TraitType>, {
    cpu_limit: 'float', cpu_guarantee: 'float',
    mem_limit: 'bytes', mem_guarantee: 'bytes',
    start_timeout: 'int', http_timeout: 'int', port: 'int', hub_connect_port: 'int', delete_grace_period: 'int',
    slow_spawn_message_threshold: 'int', slow_spawn_message_frequency: 'int', uid: 'int', gid: 'int', fs_gid: 'int',
    privileged: 'bool', allow_privilege_escalation: 'bool', automount_service_account_token: 'bool', delete_stopped_pods: 'bool',
    storage_pvc_ensure: 'bool', delete_pvc: 'bool', remember_pvc_name: 'bool', services_enabled: 'bool', debug: 'bool', disable_user_config: 'bool',
    image: 'str', image_pull_policy: 'str', working_dir: 'str', service_account: 'str', storage_capacity: 'str', storage_class: 'str',
    scheduler_name: 'str', priority_class_name: 'str', default_url: 'str', notebook_dir: 'str', pod_name_template: 'str',
    pvc_name_template: 'str', namespace: 'str', slow_spawn_message: 'str',
    environment: 'dict', node_selector: 'dict', extra_labels: 'dict', extra_annotations: 'dict', extra_resource_guarantees: 'dict',
    extra_resource_limits: 'dict', extra_pod_config: 'dict', extra_container_config: 'dict', storage_selector: 'dict',
    storage_extra_labels: 'dict', storage_extra_annotations: 'dict', lifecycle_hooks: 'dict',
    args: 'list', storage_access_modes: 'list',
  }),
);

/**
 * JupyterHub's ByteSpecification: a number, or a string whose last character is K, M, G or T
 * and whose rest is a number. Returns bytes, or undefined when the trait would refuse it. (Only
 * the plain decimal spellings of Python's float() are accepted: a subset, never more.)
 */
export function byteSpecification(value: unknown): number | undefined {
  if (typeof value === 'number' && Number.isFinite(value)) return Math.trunc(value);
  if (typeof value !== 'string') return undefined;
  const m = /^(\d+(?:\.\d*)?|\.\d+)([KMGT])$/.exec(value);
  if (!m) return undefined;
  const unit = { K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }[m[2] as 'K' | 'M' | 'G' | 'T'];
  return Math.trunc(Number(m[1]) * unit);
}

const TYPE_TEXT: Record<TraitType, string> = {
  float: 'a number (Float)',
  int: 'a whole number (Integer)',
  bool: 'true or false (Bool)',
  bytes: 'a number of bytes or a size like "4G" with K, M, G or T (ByteSpecification)',
  str: 'a string (Unicode)',
  dict: 'a mapping (Dict)',
  list: 'a list (List)',
};

function fitsTrait(type: TraitType, v: unknown): boolean {
  if (v === null) return true;
  switch (type) {
    case 'float':
      return typeof v === 'number';
    case 'int':
      return typeof v === 'number' && Number.isInteger(v);
    case 'bool':
      return typeof v === 'boolean';
    case 'bytes':
      return byteSpecification(v) !== undefined;
    case 'str':
      return typeof v === 'string';
    case 'dict':
      return typeof v === 'object' && !Array.isArray(v);
    case 'list':
      return Array.isArray(v);
  }
}

/**
 * Problems with the top-level keys of one override as KubeSpawner would assign them. In an
 * unlisted choice's override a string with `{value}` is judged after substitution: fine for a
 * string trait, checked at resolve time for a size, and refused outright for a number or a
 * boolean, which no substituted string can ever be.
 */
export function traitProblems(override: Record<string, unknown>, unlisted: boolean): Array<{ key: string; message: string }> {
  const out: Array<{ key: string; message: string }> = [];
  for (const [key, v] of Object.entries(override)) {
    const type = Object.hasOwn(TRAIT_TYPES, key) ? TRAIT_TYPES[key]! : undefined;
    if (!type) continue;
    if (unlisted && typeof v === 'string' && substitutesValue(v)) {
      if (type === 'str' || type === 'bytes') continue;
      out.push({ key, message: `is ${TYPE_TEXT[type]} in KubeSpawner; a substituted {value} is a string, which it refuses: offer choices instead` });
      continue;
    }
    if (!fitsTrait(type, v)) out.push({ key, message: `must be ${TYPE_TEXT[type]}, as KubeSpawner's ${key} trait accepts` });
  }
  return out;
}

/** After substitution: does every size trait the value went into still parse? Returns the first key that doesn't. */
export function unfitSubstitution(template: Record<string, unknown>, resolved: Record<string, unknown>): string | undefined {
  for (const [key, v] of Object.entries(template)) {
    if (typeof v !== 'string' || !substitutesValue(v)) continue;
    const type = Object.hasOwn(TRAIT_TYPES, key) ? TRAIT_TYPES[key] : undefined;
    if (type === 'bytes' && byteSpecification(Object.hasOwn(resolved, key) ? resolved[key] : undefined) === undefined) return key;
  }
  return undefined;
}
