import { STATUS_CODES } from 'node:http';
import { HubApiError } from '@hubside/hub-client';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors, isResponseSerializationError } from 'fastify-type-provider-zod';

export { default as createError } from '@fastify/error';

/** The one error body every Hubside service answers with. */
export interface ErrorBody {
  statusCode: number;
  error: string;
  message: string;
  code?: string;
}

export function errorBody(statusCode: number, message: string, code?: string): ErrorBody {
  return { statusCode, error: STATUS_CODES[statusCode] ?? 'Error', message, ...(code ? { code } : {}) };
}

// Connection-level failures of PostgreSQL (restart, failover, network) as node-postgres reports
// them: SQLSTATE class 08, admin shutdown / crash / starting up (57P01-03), and socket errors.
const DB_UNAVAILABLE_CODES = new Set(['57P01', '57P02', '57P03', '08000', '08001', '08003', '08004', '08006', 'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT']);
const DB_UNAVAILABLE_MESSAGES = [
  'Connection terminated unexpectedly',
  'Connection terminated due to connection timeout',
  'timeout exceeded when trying to connect',
  'Client has encountered a connection error and is not queryable',
  'Client was closed and is not queryable',
];
const DATABASE_RETRY_AFTER_S = 5;

/**
 * An outgoing HTTP call (fetch / undici) that timed out or could not connect: the upstream's
 * problem, answered 504 or 502 rather than 500.
 */
export function upstreamFailure(err: unknown): 502 | 504 | undefined {
  const e = err as { name?: unknown; message?: unknown; cause?: unknown } | undefined;
  if (!e || typeof e !== 'object') return undefined;
  if (e.name === 'TimeoutError') return 504;
  const cause = e.cause as { code?: unknown; name?: unknown } | undefined;
  if (e.name === 'TypeError' && e.message === 'fetch failed') {
    return cause && (cause.name === 'TimeoutError' || cause.name === 'HeadersTimeoutError' || cause.name === 'ConnectTimeoutError') ? 504 : 502;
  }
  return undefined;
}

/** True when the database could not be reached, as opposed to a query that failed. */
export function isDatabaseUnavailable(err: unknown): boolean {
  let e: unknown = err;
  for (let i = 0; i < 4 && e && typeof e === 'object'; i += 1) {
    const { code, message } = e as { code?: unknown; message?: unknown };
    if (typeof code === 'string' && DB_UNAVAILABLE_CODES.has(code)) return true;
    if (typeof message === 'string' && DB_UNAVAILABLE_MESSAGES.some((m) => message.includes(m))) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

function validationMessage(err: FastifyError): string {
  if (hasZodFastifySchemaValidationErrors(err)) {
    const where = err.validationContext ?? 'request';
    const parts = err.validation.map((v) => {
      const path = v.instancePath.replace(/^\//, '').replaceAll('/', '.');
      return `${where}${path ? `.${path}` : ''}: ${v.message}`;
    });
    return parts.join('; ');
  }
  return err.message;
}

/** Install the shared error and not-found handlers: JSON always, never a stack, never a 500 for bad input. */
export function installErrorHandlers(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    if (err.validation) {
      return reply.code(400).send(errorBody(400, validationMessage(err), 'HUBSIDE_ERR_VALIDATION'));
    }
    if (err instanceof HubApiError) {
      // The hub answered, but not as expected: our problem with the hub, not the caller's.
      request.log.warn({ err }, 'unexpected JupyterHub API answer');
      return reply.code(502).send(errorBody(502, err.message, 'HUBSIDE_ERR_HUB_API'));
    }
    if (isDatabaseUnavailable(err)) {
      // A restart or failover: temporary, and the pool reconnects by itself.
      request.log.warn({ err: { message: err.message, code: err.code } }, 'database unavailable');
      return reply
        .code(503)
        .header('retry-after', String(DATABASE_RETRY_AFTER_S))
        .send(errorBody(503, `The database is unavailable right now. Try again in ${DATABASE_RETRY_AFTER_S} seconds.`, 'HUBSIDE_ERR_DATABASE_UNAVAILABLE'));
    }
    const upstream = upstreamFailure(err);
    if (upstream) {
      request.log.warn({ err: { name: err.name, message: err.message } }, 'upstream call failed');
      const message = upstream === 504 ? 'An upstream service did not answer in time. Try again shortly.' : 'An upstream service could not be reached. Try again shortly.';
      return reply.code(upstream).send(errorBody(upstream, message, upstream === 504 ? 'HUBSIDE_ERR_UPSTREAM_TIMEOUT' : 'HUBSIDE_ERR_UPSTREAM_UNAVAILABLE'));
    }
    if (isResponseSerializationError(err)) {
      request.log.error({ err }, 'response did not match its schema');
      return reply.code(500).send(errorBody(500, 'Internal Server Error', 'HUBSIDE_ERR_INTERNAL'));
    }
    const status = typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 500;
    if (status >= 500) {
      if (status === 500) request.log.error({ err }, 'unhandled error');
      else request.log.warn({ err }, 'service unavailable');
      // Every 503 (hub down, not configured, overloaded) is temporary: say when to come back.
      if (status === 503 && !reply.hasHeader('retry-after')) void reply.header('retry-after', '5');
      const message = status === 500 ? 'Internal Server Error' : err.message;
      return reply.code(status).send(errorBody(status, message, status === 500 ? 'HUBSIDE_ERR_INTERNAL' : err.code));
    }
    // Fastify's own client errors (bad JSON, wrong content type, body too large) keep their status.
    return reply.code(status).send(errorBody(status, err.message, err.code));
  });

  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?', 1)[0] ?? '';
    return reply.code(404).send(errorBody(404, `Route ${request.method} ${path.slice(0, 200)} not found`, 'HUBSIDE_ERR_NOT_FOUND'));
  });
}
