import { getHeapStatistics } from 'node:v8';
import fastifyRateLimit from '@fastify/rate-limit';
import fastifyUnderPressure, { TYPE_EVENT_LOOP_DELAY } from '@fastify/under-pressure';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { errorBody } from './errors.js';

/** Limits every service applies before doing any work for a request. */
export interface ProtectionSettings {
  /** Requests per minute per hub user; 0 turns the limit off. */
  userRequestsPerMinute: number;
  /** Per hub service (the hub itself calls the profile callable and the quota check for everyone). */
  serviceRequestsPerMinute: number;
  /** Per client address, for requests that carry no hub identity (login, OIDC, callbacks). */
  anonymousRequestsPerMinute: number;
  /** Shed load (503) when the event loop lags more than this; 0 turns the check off. */
  maxEventLoopDelayMs: number;
  /** Shed load when the V8 heap is this full (0 < f ≤ 1 of the heap limit); 0 turns the check off. */
  maxHeapFraction: number;
  /** Whole request, headers and body, must arrive within this; slow (slowloris) clients are cut off. */
  requestTimeoutMs: number;
}

export const DEFAULT_PROTECTION: ProtectionSettings = {
  // A person clicking, or a notebook refreshing credentials, stays far below 20 requests a second.
  userRequestsPerMinute: 1200,
  // The hub asks on behalf of every user at once (500 spawns at 9:00), so services get headroom.
  serviceRequestsPerMinute: 30_000,
  // A whole class behind one campus NAT logs in through the same address within a minute.
  anonymousRequestsPerMinute: 3000,
  maxEventLoopDelayMs: 1000,
  maxHeapFraction: 0.9,
  requestTimeoutMs: 30_000,
};

declare module 'fastify' {
  interface FastifyContextConfig {
    /** false keeps a route answering under load (health, metrics), like liveness probes need. */
    shed?: boolean;
  }
}

const PRESSURE_RETRY_AFTER_S = 5;

type Kind = 'user' | 'service' | 'anonymous';

function callerKind(request: FastifyRequest): Kind {
  return request.hubUser ? request.hubUser.kind : 'anonymous';
}

/**
 * Register back-pressure and per-caller rate limits. The limiter runs as a preHandler, after hub
 * authentication (an onRequest hook), so it counts per hub user rather than per address: a class
 * behind one NAT is not one caller, and one user cannot hide behind many addresses.
 */
export async function registerProtection(app: FastifyInstance, limits: ProtectionSettings): Promise<void> {
  const perMinute: Record<Kind, number> = {
    user: limits.userRequestsPerMinute,
    service: limits.serviceRequestsPerMinute,
    anonymous: limits.anonymousRequestsPerMinute,
  };
  const heapLimit = getHeapStatistics().heap_size_limit;

  await app.register(fastifyUnderPressure, {
    maxEventLoopDelay: limits.maxEventLoopDelayMs,
    maxHeapUsedBytes: limits.maxHeapFraction > 0 ? Math.floor(heapLimit * limits.maxHeapFraction) : 0,
    sampleInterval: 500,
    pressureHandler: (request: FastifyRequest, reply: FastifyReply, type: string, value: number | undefined) => {
      // Liveness must not fail because the service is busy; a restart would only make it worse.
      if (request.routeOptions.config?.shed === false) return undefined;
      // under-pressure reports an infinite delay when its sampler found no delay samples at all,
      // which one short block (a key generated, a page of PGlite work) causes when it spans the
      // sampling tick. That says nothing about sustained lag, so it must not shed: a real overload
      // shows up as a finite mean over the next samples.
      if (type === TYPE_EVENT_LOOP_DELAY && value === Number.POSITIVE_INFINITY) return undefined;
      request.log.warn({ pressure: type }, 'shedding load');
      void reply.code(503).header('retry-after', String(PRESSURE_RETRY_AFTER_S));
      return errorBody(503, `The service is overloaded (${type}). Try again in ${PRESSURE_RETRY_AFTER_S} seconds.`, 'HUBSIDE_ERR_OVERLOADED') as never;
    },
  });

  await app.register(fastifyRateLimit, {
    hook: 'preHandler',
    timeWindow: 60_000,
    // Enough distinct callers for a large hub before the oldest counters are dropped.
    cache: 50_000,
    keyGenerator: (request) => {
      const user = request.hubUser;
      // `kind:name` can't collide across kinds, and addresses are never mistaken for user names.
      return user ? `${user.kind}:${user.name}` : `addr:${request.ip}`;
    },
    allowList: (request) => perMinute[callerKind(request)] <= 0,
    max: (request) => perMinute[callerKind(request)],
    errorResponseBuilder: (request, context) => {
      const who = callerKind(request) === 'anonymous' ? 'this address' : 'this user';
      const seconds = Math.max(1, Math.ceil(context.ttl / 1000));
      return Object.assign(new Error(`Too many requests from ${who}: the limit is ${context.max} a minute. Try again in ${seconds} seconds.`), {
        statusCode: 429,
        code: 'HUBSIDE_ERR_RATE_LIMITED',
      });
    },
  });
}
