import { createHash, randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { Kysely } from 'kysely';
import type Provider from 'oidc-provider';
import * as client from 'openid-client';
import type { AuthBridgeConfig } from './config.js';
import { hubIdps, resolveSecret } from './config.js';
import type { DB } from './db.table.js';
import { cleanupExpired } from './oidc/adapter.js';
import { loadKeys, rotateKeys } from './oidc/keys.js';
import { createProvider, mountedCallback } from './oidc/provider.js';
import { Upstream } from './upstream.js';

export interface BridgeOptions {
  config: AuthBridgeConfig;
  prefix: string;
  /** Where browsers reach `{prefix}`, without it; falls back to the service's own address. */
  publicUrl: string;
  env?: NodeJS.ProcessEnv;
}

export interface Bridge {
  config: AuthBridgeConfig;
  prefix: string;
  publicUrl: string;
  issuer: string;
  db: Kysely<DB>;
  upstreams: Map<string, Upstream>;
  /** The hub whose OAuth client this is, by client id. */
  hubByClient: Map<string, string>;
  provider(): Provider;
  handle(req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse): void;
  /** New signing key; the provider is rebuilt, sessions and grants stay (they live in the database). */
  rotateKeys(): Promise<string>;
  cleanup(): Promise<number>;
}

declare module 'fastify' {
  interface FastifyInstance {
    bridge: Bridge;
  }
}

export function hashCode(code: string): string {
  return createHash('sha256').update(code).digest('hex');
}

export function newSecret(bytes = 24): string {
  return randomBytes(bytes).toString('base64url');
}

export { client };

async function bridgePlugin(app: FastifyInstance, opts: BridgeOptions): Promise<void> {
  const env = opts.env ?? process.env;
  const { prefix } = opts;
  const publicUrl = opts.publicUrl.replace(/\/+$/, '');
  const issuer = `${publicUrl}${prefix}oidc`;
  const db = app.db as Kysely<DB>;

  // A hub or IdP whose secret is missing is left out, loudly, rather than taking the whole
  // service down: the other hubs keep working, and `npm start` runs the example without secrets.
  const config: AuthBridgeConfig = { ...opts.config, hubs: {}, upstreams: {} };
  const upstreams = new Map<string, Upstream>();
  for (const [name, up] of Object.entries(opts.config.upstreams)) {
    try {
      const secret = resolveSecret(`auth-bridge.upstreams.${name}`, up, env);
      upstreams.set(name, new Upstream(name, up, secret, `${publicUrl}${prefix}callback/${name}`));
      config.upstreams[name] = up;
    } catch (err) {
      app.log.error({ idp: name, problem: (err as Error).message }, 'identity provider disabled: its client secret is missing');
    }
  }
  const secrets: Record<string, string> = {};
  for (const [name, hub] of Object.entries(opts.config.hubs)) {
    try {
      secrets[name] = resolveSecret(`auth-bridge.hubs.${name}`, hub, env);
      config.hubs[name] = { ...hub, idps: hubIdps(opts.config.upstreams, hub).filter((i) => upstreams.has(i)) };
    } catch (err) {
      app.log.error({ hub: name, problem: (err as Error).message }, 'hub disabled: its client secret is missing');
    }
  }
  for (const [name, hub] of Object.entries(config.hubs)) {
    if (hub.idps.length === 0) app.log.warn({ hub: name }, 'this hub has no identity provider to log in with');
  }

  let current: { provider: Provider; handle: ReturnType<typeof mountedCallback> };
  const build = async () => {
    const keys = await loadKeys(db, { maxAgeDays: config.keyRotationDays });
    const provider = await createProvider({ config, db, keys, issuer, prefix, secrets });
    provider.on('server_error', (_ctx: unknown, err: Error) => app.log.error({ err }, 'oidc-provider server error'));
    current = { provider, handle: mountedCallback(provider, issuer) };
  };
  await build();

  const bridge: Bridge = {
    config,
    prefix,
    publicUrl,
    issuer,
    db,
    upstreams,
    hubByClient: new Map(Object.entries(config.hubs).map(([name, hub]) => [hub.clientId, name] as const)),
    provider: () => current.provider,
    handle: (req, res) => current.handle(req, res),
    async rotateKeys() {
      const kid = await rotateKeys(db);
      await build();
      return kid;
    },
    cleanup: () => cleanupExpired(db, { loginLogDays: config.loginLogDays }),
  };
  app.decorate('bridge', bridge);

  await bridge.cleanup();
  const timer = setInterval(() => {
    bridge.cleanup().catch((err: unknown) => app.log.warn({ err }, 'cleanup of expired rows failed'));
  }, config.cleanupIntervalSeconds * 1000);
  timer.unref();
  app.addHook('onClose', async () => clearInterval(timer));
}

export const bridge = fp(bridgePlugin, { name: 'auth-bridge-core', dependencies: ['hubside-database'] });
