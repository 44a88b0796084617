import { setTimeout as delay } from 'node:timers/promises';

export interface WaitForOptions {
  timeoutMs: number;
  /** Pause between attempts; default 50 ms. */
  intervalMs?: number;
  /** Names the condition in the timeout error, e.g. "hub API answers". */
  what: string;
  /** Aborting fails the wait at once with the signal's reason (e.g. "the hub exited"). */
  signal?: AbortSignal;
}

const pending = Symbol('pending');

/**
 * Polls `fn` until it returns something other than `undefined` or `false`, and resolves with it.
 * A throwing attempt counts as "not yet": during start-up, connection errors are the normal case.
 * The last error is kept so a timeout says why the condition never held.
 */
export async function waitFor<T>(
  fn: () => Promise<T | undefined | false>,
  opts: WaitForOptions,
): Promise<T> {
  const interval = opts.intervalMs ?? 50;
  const deadline = Date.now() + opts.timeoutMs;
  let lastError: unknown;
  let attempts = 0;
  for (;;) {
    opts.signal?.throwIfAborted();
    attempts += 1;
    const remaining = deadline - Date.now();
    // An attempt that hangs (a stuck socket) must not outlive the deadline.
    const outcome = await raceDeadline(fn, Math.max(remaining, 1), opts.signal).catch((err: unknown) => {
      opts.signal?.throwIfAborted();
      lastError = err;
      return pending;
    });
    if (outcome !== pending && outcome !== undefined && outcome !== false) return outcome as T;
    if (Date.now() >= deadline) {
      const cause = lastError === undefined ? '' : `; last error: ${describe(lastError)}`;
      throw new Error(`timed out after ${opts.timeoutMs} ms (${attempts} attempts) waiting for ${opts.what}${cause}`, {
        cause: lastError,
      });
    }
    await delay(Math.min(interval, Math.max(deadline - Date.now(), 0)), undefined, opts.signal ? { signal: opts.signal } : undefined).catch(
      () => opts.signal?.throwIfAborted(),
    );
  }
}

function raceDeadline<T>(fn: () => Promise<T>, ms: number, signal: AbortSignal | undefined): Promise<T | typeof pending> {
  return new Promise<T | typeof pending>((resolve, reject) => {
    const timer = setTimeout(() => resolve(pending), ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    Promise.resolve()
      .then(fn)
      .then(resolve, reject)
      .finally(() => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      });
  });
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const cause = err.cause instanceof Error ? ` (${err.cause.message})` : '';
    return `${err.message}${cause}`;
  }
  return String(err);
}
