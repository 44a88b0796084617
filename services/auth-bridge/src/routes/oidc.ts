import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';

/**
 * oidc-provider answers everything under `{prefix}oidc`: discovery, JWKS, authorize, token,
 * userinfo, revocation and end-session. Fastify routes the request and hands the raw
 * request and response over (hijack); the provider reads the body itself.
 */
async function oidcRoutes(app: FastifyInstance): Promise<void> {
  const { prefix } = app.bridge;
  await app.register(async (scope) => {
    // Leave bodies unread: oidc-provider parses its own (form or JSON) with its own limits.
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', (_req, _payload, done) => done(null));
    const handler = async (request: import('fastify').FastifyRequest, reply: import('fastify').FastifyReply) => {
      reply.hijack();
      app.bridge.handle(request.raw, reply.raw);
    };
    const config = { auth: false as const };
    scope.all(`${prefix}oidc`, { config }, handler);
    scope.all(`${prefix}oidc/*`, { config }, handler);
  });
}

export const oidcRoutesPlugin = fp(oidcRoutes, { name: 'auth-bridge-oidc', dependencies: ['auth-bridge-core'] });
