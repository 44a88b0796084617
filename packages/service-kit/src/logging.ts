import type { FastifyReply, FastifyRequest } from 'fastify';
import type { LoggerOptions } from 'pino';

/**
 * Paths pino replaces with "[redacted]": credential headers, and the usual secret names at the
 * top level of a log object or one level down (`{ config: { apiToken } }`).
 *
 * Deliberately not deeper: pino applies redaction to every child logger's bindings, and Fastify
 * makes a child logger per request, so each wildcard level costs on every request whether or not
 * anything is logged. Code must not log deeper objects that can hold secrets.
 */
const SECRET_KEYS = [
  'token',
  'apiToken',
  'api_token',
  'access_token',
  'refresh_token',
  'id_token',
  'client_secret',
  'clientSecret',
  'password',
  'secret',
  'secrets',
  'cookieSecret',
  'authorization',
  'cookie',
  'SecretAccessKey',
  'SessionToken',
  'sessionToken',
  'secretAccessKey',
  'databaseUrl',
  'DATABASE_URL',
  'JUPYTERHUB_API_TOKEN',
];

export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["x-auth-token"]',
  'res.headers["set-cookie"]',
  ...SECRET_KEYS,
  ...SECRET_KEYS.map((k) => `*.${k}`),
];

// Query parameters that carry credentials or one-time codes (OAuth callback, ?token=...).
const SECRET_QUERY = /([?&](?:token|code|state|access_token|id_token|refresh_token|client_secret|sig|signature|X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token)=)[^&#]*/gi;

/** A URL fit for logs: credential-bearing query values are replaced. */
export function redactUrl(url: string): string {
  return url.replace(SECRET_QUERY, '$1[redacted]');
}

export function loggerOptions(opts: { level: string; service: string }): LoggerOptions {
  return {
    level: opts.level,
    base: { service: opts.service },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    serializers: {
      req(req: FastifyRequest) {
        return {
          method: req.method,
          url: redactUrl(req.url),
          remoteAddress: req.ip,
          reqId: req.id,
        };
      },
      res(res: FastifyReply) {
        return { statusCode: res.statusCode };
      },
      err(err: Error & { code?: string; statusCode?: number }) {
        // Stacks only for bugs: expected errors (4xx, a hub outage's 503) carry a status of their own.
        const expected = typeof err.statusCode === 'number' && err.statusCode !== 500;
        return {
          type: err.name,
          message: redactUrl(err.message),
          code: err.code,
          ...(expected ? {} : { stack: err.stack }),
        };
      },
    },
  };
}
