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
    if (isResponseSerializationError(err)) {
      request.log.error({ err }, 'response did not match its schema');
      return reply.code(500).send(errorBody(500, 'Internal Server Error', 'HUBSIDE_ERR_INTERNAL'));
    }
    const status = typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 500;
    if (status >= 500) {
      if (status === 500) request.log.error({ err }, 'unhandled error');
      else request.log.warn({ err }, 'service unavailable');
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
