export interface Change {
  path: string;
  op: 'added' | 'removed' | 'changed';
  from?: unknown;
  to?: unknown;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Lists of profiles are keyed by slug, so reordering or inserting one reads as what it is. */
function keyed(list: unknown[]): Map<string, unknown> | null {
  const out = new Map<string, unknown>();
  for (const item of list) {
    if (!isObject(item) || typeof item.slug !== 'string' || out.has(item.slug)) return null;
    out.set(item.slug, item);
  }
  return out;
}

/** A structural diff of two JSON documents, bounded by `limit` changes. */
export function diffJson(a: unknown, b: unknown, path = '', out: Change[] = [], limit = 1000): Change[] {
  if (out.length >= limit) return out;
  if (Array.isArray(a) && Array.isArray(b)) {
    const ka = keyed(a);
    const kb = keyed(b);
    if (ka && kb) {
      for (const [k, v] of ka) {
        const at = `${path}[slug=${k}]`;
        if (kb.has(k)) diffJson(v, kb.get(k), at, out, limit);
        else out.push({ path: at, op: 'removed', from: v });
      }
      for (const [k, v] of kb) if (!ka.has(k)) out.push({ path: `${path}[slug=${k}]`, op: 'added', to: v });
      return out;
    }
    const n = Math.max(a.length, b.length);
    for (let i = 0; i < n; i += 1) {
      const at = `${path}[${i}]`;
      if (i >= a.length) out.push({ path: at, op: 'added', to: b[i] });
      else if (i >= b.length) out.push({ path: at, op: 'removed', from: a[i] });
      else diffJson(a[i], b[i], at, out, limit);
    }
    return out;
  }
  if (isObject(a) && isObject(b)) {
    for (const k of Object.keys(a)) {
      const at = path ? `${path}.${k}` : k;
      if (Object.hasOwn(b, k)) diffJson(a[k], b[k], at, out, limit);
      else out.push({ path: at, op: 'removed', from: a[k] });
    }
    for (const k of Object.keys(b)) if (!Object.hasOwn(a, k)) out.push({ path: path ? `${path}.${k}` : k, op: 'added', to: b[k] });
    return out;
  }
  if (JSON.stringify(a) !== JSON.stringify(b)) out.push({ path: path || '(document)', op: 'changed', from: a, to: b });
  return out;
}
