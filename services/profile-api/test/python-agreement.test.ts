/**
 * The hub runs Python: KubeSpawner matches validation_regex with `re`, formats unlisted overrides
 * with `str.format_map`, and JupyterHub's ByteSpecification reads memory sizes. Whatever profile-api
 * accepts at save time must mean the same there as here, so this runs the hub's own Python on the
 * same inputs and compares (issue 20.4, issue 14a).
 */
import { execFileSync } from 'node:child_process';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { byteSpecification, formatProblem, regexProblem } from '../src/profiles/kubespawner.js';
import { RegexGuard, recursiveFormat } from '../src/profiles/resolve.js';
import { checkDocument } from '../src/profiles/schema.js';

// The hub's Python (Debian's, which has jupyterhub); the python3 on PATH may be another one.
const PY = String.raw`
import json, re, sys
from jupyterhub.traitlets import ByteSpecification
class IgnoreMissing(dict):
    def __missing__(self, key):
        return "{" + key + "}"
req = json.load(sys.stdin)
out = {"regex": [], "format": [], "bytes": []}
for pattern, values in req["regex"]:
    try:
        r = re.compile(pattern)
    except Exception as e:
        out["regex"].append({"error": str(e)})
        continue
    out["regex"].append({"matches": [r.match(v) is not None for v in values]})
for s, v in req["format"]:
    try:
        out["format"].append({"value": s.format_map(IgnoreMissing(value=v))})
    except Exception as e:
        out["format"].append({"error": type(e).__name__})
for v in req["bytes"]:
    try:
        out["bytes"].append({"value": ByteSpecification().validate(None, v)})
    except Exception as e:
        out["bytes"].append({"error": type(e).__name__})
json.dump(out, sys.stdout)
`;

interface PyAnswer {
  regex: Array<{ error?: string; matches?: boolean[] }>;
  format: Array<{ error?: string; value?: string }>;
  bytes: Array<{ error?: string; value?: number }>;
}
function python(req: { regex?: Array<[string, string[]]>; format?: Array<[string, string]>; bytes?: unknown[] }): PyAnswer {
  const input = JSON.stringify({ regex: req.regex ?? [], format: req.format ?? [], bytes: req.bytes ?? [] });
  return JSON.parse(execFileSync('/usr/bin/python3', ['-W', 'ignore', '-c', PY], { input, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })) as PyAnswer;
}

const guard = new RegexGuard({ maxLength: 512, timeoutMs: 200 });

describe('validation_regex: only what Python and JavaScript read alike', () => {
  it('refuses the JavaScript-only and catastrophic patterns of the issue, which Python rejects or would run long', () => {
    for (const p of ['\\p{L}+', '(?<n>a)', '\\d+', '\\w+:\\w+', '[\\d]', '(?=a)a', '(?i)a', 'a{', '{,3}', '[]a]', '[^]', '(a+)+$', '(a*)*b', 'a**', 'a*+']) {
      expect(regexProblem(p), p).toBeDefined();
    }
    // The first two compile in JavaScript and raise in Python: that is the bug being fixed.
    expect(() => new RegExp('\\p{L}+', 'u')).not.toThrow();
    const py = python({ regex: [['\\p{L}+', []], ['(?<n>a)', []]] });
    expect(py.regex.every((r) => r.error)).toBe(true);
  });

  it('keeps the ordinary patterns admins write', () => {
    for (const p of ['^.+:.+$', '^[a-z0-9.-]+/[a-z0-9._/-]+:[A-Za-z0-9._-]+$', '^(?:quay\\.io|ghcr\\.io)/.+$', '[0-9]{1,3}G', 'a|b|', '^$']) {
      expect(regexProblem(p), p).toBeUndefined();
    }
  });

  it('every accepted pattern compiles in Python and matches exactly the same values (re.match)', () => {
    const token = fc.constantFrom('a', 'b', 'ä', '.', '*', '+', '?', '*?', '|', '(', ')', '(?:', '[a-c]', '[^b]', '[-a]', '[a\\]]', '\\.', '\\\\', '{2}', '{1,3}', '{0,}', '^', '$', '\\d', '{', '}', ']', '[', ':', '/', ' ', '-', '\\-', '[ä-ü]');
    const patterns = fc.sample(fc.array(token, { maxLength: 8 }).map((t) => t.join('')), { numRuns: 1500, seed: 20 });
    const values = fc.sample(fc.string({ unit: fc.constantFrom('a', 'b', 'c', 'ä', '.', ':', '/', ' ', '-', ']', '\\', 'ü', '😀', '1', '٣'), maxLength: 6 }), { numRuns: 40, seed: 21 });
    const accepted = [...new Set(patterns)].filter((p) => regexProblem(p) === undefined);
    expect(accepted.length).toBeGreaterThan(100);
    const py = python({ regex: accepted.map((p) => [p, values]) });
    accepted.forEach((p, n) => {
      const answer = py.regex[n]!;
      expect(answer.error, `Python refuses ${JSON.stringify(p)}`).toBeUndefined();
      const js = values.map((v) => guard.match(p, v));
      expect(js, `pattern ${JSON.stringify(p)}`).toEqual(answer.matches);
    });
  });

  it('a document with such a regex is refused when saved, naming the field', () => {
    const doc = [{ display_name: 'P', default: true, profile_options: { image: { display_name: 'I', choices: {}, unlisted_choice: { enabled: true, validation_regex: '\\p{L}+' } } } }];
    const res = checkDocument(doc);
    expect(res.ok).toBe(false);
    if (!res.ok) expect(res.problems[0]).toMatchObject({ path: '[0].profile_options.image.unlisted_choice.validation_regex', message: expect.stringContaining('\\p') });
  });
});

describe('{value} in unlisted overrides: only what str.format_map reads as plain substitution', () => {
  it('refuses the strings of the issue: Python raises on them or formats them differently', () => {
    const bad = ['a{b', 'a}b', '{value.upper}', '{value:>10}', '{value[0]}', '{value!r}', '{}', '{0}', '{other}'];
    for (const s of bad) expect(formatProblem(s), s).toBeDefined();
    const py = python({ format: bad.slice(0, 6).map((s) => [s, 'img:1']) });
    py.format.forEach((r, n) => expect(r.error !== undefined || r.value !== recursiveFormat(bad[n]!, 'img:1'), bad[n]).toBe(true));
  });

  it('every accepted string formats in Python exactly as resolve substitutes it', () => {
    const token = fc.constantFrom('{value}', '{', '}', '{{', '}}', 'a', ':', '{value.upper}', '{value:>3}', '{value[0]}', '{x}', '!r', '0');
    const strings = fc.sample(fc.array(token, { maxLength: 6 }).map((t) => t.join('')), { numRuns: 800, seed: 22 });
    const accepted = [...new Set(strings)].filter((s) => formatProblem(s) === undefined);
    expect(accepted.length).toBeGreaterThan(30);
    const values = ['img:1', '{value}', '}{', '__proto__', 'ä😀'];
    const cases = accepted.flatMap((s) => values.map((v) => [s, v] as [string, string]));
    const py = python({ format: cases });
    cases.forEach(([s, v], n) => expect(recursiveFormat(s, v), `${s} with ${v}`).toBe(py.format[n]!.value));
  });
});

describe('memory sizes: what JupyterHub\'s ByteSpecification accepts', () => {
  it('accepts only sizes the trait accepts, with the same number of bytes', () => {
    const inputs = ['2G', '512M', '1.5G', '.5G', '4T', '100K', '2Gi', '2g', '2', '2 G', 'G', '', '1e3G', 'infG', 2048, 1.5];
    const py = python({ bytes: inputs });
    inputs.forEach((v, n) => {
      const ours = byteSpecification(v);
      if (ours !== undefined) expect(py.bytes[n], String(v)).toEqual({ value: ours });
    });
    expect(byteSpecification('2Gi')).toBeUndefined();
    expect(py.bytes[inputs.indexOf('2Gi')]!.error).toBeDefined();
  });
});
