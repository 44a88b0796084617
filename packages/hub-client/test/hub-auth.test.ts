import { describe, expect, it } from 'vitest';
import { MalformedAuthorizationError } from '../src/errors.js';
import { safeNext, tokenFromHeader } from '../src/hub-auth.js';

describe('reading the Authorization header', () => {
  it('accepts "token" and "Bearer" in any case, as JupyterHub does', () => {
    expect(tokenFromHeader('token abc123')).toBe('abc123');
    expect(tokenFromHeader('Bearer abc123')).toBe('abc123');
    expect(tokenFromHeader('TOKEN abc123')).toBe('abc123');
    expect(tokenFromHeader('bearer\tabc123 ')).toBe('abc123');
    expect(tokenFromHeader(undefined)).toBeUndefined();
  });

  it.each([
    ['Basic dXNlcjpwYXNz', /unsupported scheme "Basic"/],
    ['token', /missing token/],
    ['bearer   ', /missing token/],
    ['', /empty header/],
    ['token a b', /Malformed/],
    ['tokenabc', /unsupported scheme/],
  ])('rejects %j', (header, why) => {
    expect(() => tokenFromHeader(header)).toThrow(MalformedAuthorizationError);
    expect(() => tokenFromHeader(header)).toThrow(why);
  });

  it('never echoes a long scheme back in full', () => {
    expect(() => tokenFromHeader(`${'x'.repeat(5000)} y`)).toThrow(/"x{20}"/);
  });
});

describe('the post-login destination cannot leave the service', () => {
  const prefix = '/services/usage/';
  it.each([
    ['/services/usage/', '/services/usage/'],
    ['/services/usage/reports?month=2026-10', '/services/usage/reports?month=2026-10'],
    ['https://evil.example/services/usage/', prefix],
    ['//evil.example/services/usage/', prefix],
    ['/\\evil.example/', prefix],
    ['/services/usage/../../hub/admin', prefix],
    ['/services/usagex/', prefix],
    ['/services/other/', prefix],
    ['javascript:alert(1)', prefix],
    ['/services/usage/\r\nSet-Cookie: x=y', prefix],
    [undefined, prefix],
    [['/services/usage/a'], prefix],
  ])('%j → %j', (next, expected) => {
    expect(safeNext(next, prefix)).toBe(expected);
  });
});
