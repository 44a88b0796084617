import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { link, readFile, unlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';

// PGlite has no lock of its own: a second PGlite (in this process or another one) opens the
// same data directory without complaint, and each then works on its own in-memory copy of the
// catalog, so writes from one are silently lost or the files get corrupted. This lock file next
// to the data directory turns that into a clear startup error.
//
// It is a best-effort guard, not a distributed lock: a lock left by a crashed process is taken
// over when its pid is gone (or now belongs to a different process, judged by the process start
// time on Linux), and a lock written on another host cannot be checked at all, so it is taken
// over with a warning. Deployments must still run one replica per data directory (Recreate
// strategy, not RollingUpdate, when the directory is on a volume).

interface LockOwner {
  pid: number;
  hostname: string;
  /** Start time of the process in clock ticks since boot (Linux), to tell a reused pid apart. */
  startTicks: string | null;
  /** Distinguishes this process from an earlier one with the same pid (e.g. pid 1 in a container). */
  timeOrigin: number;
}

export interface DataDirLock {
  readonly path: string;
  release(): Promise<void>;
}

export interface LockLogger {
  warn(obj: object, msg?: string): void;
}

function processStartTicks(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces and parentheses, so count from the last ')'.
    // starttime is field 22; the first field after ") " is field 3.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

function currentOwner(): LockOwner {
  return {
    pid: process.pid,
    hostname: hostname(),
    startTicks: processStartTicks(process.pid),
    timeOrigin: performance.timeOrigin,
  };
}

type OwnerState = 'held' | 'stale' | 'foreign-host';

function ownerState(owner: LockOwner): OwnerState {
  if (owner.hostname !== hostname()) return 'foreign-host';
  if (owner.pid === process.pid) {
    return owner.timeOrigin === performance.timeOrigin ? 'held' : 'stale';
  }
  try {
    process.kill(owner.pid, 0);
  } catch (err) {
    // EPERM means the pid exists but belongs to another user: still alive.
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return 'stale';
  }
  if (owner.startTicks === null) return 'held';
  const ticks = processStartTicks(owner.pid);
  return ticks === null || ticks === owner.startTicks ? 'held' : 'stale';
}

function parseOwner(text: string): LockOwner | null {
  try {
    const value = JSON.parse(text) as Partial<LockOwner>;
    if (typeof value.pid !== 'number' || typeof value.hostname !== 'string') return null;
    return {
      pid: value.pid,
      hostname: value.hostname,
      startTicks: typeof value.startTicks === 'string' ? value.startTicks : null,
      timeOrigin: typeof value.timeOrigin === 'number' ? value.timeOrigin : 0,
    };
  } catch {
    return null;
  }
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

async function unlinkIfExists(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/**
 * Takes the lock file at `lockPath` for `dataDir`, or throws naming the process that holds it.
 */
export async function lockDataDir(
  lockPath: string,
  dataDir: string,
  logger?: LockLogger,
): Promise<DataDirLock> {
  const content = JSON.stringify(currentOwner());
  // Written in full under a private name, then linked into place: link() fails atomically when
  // the lock exists, and a reader never sees a half-written file.
  const temp = `${lockPath}.${process.pid}.${randomBytes(4).toString('hex')}`;
  await writeFile(temp, content, { mode: 0o600 });
  try {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await link(temp, lockPath);
        return {
          path: lockPath,
          async release() {
            // Only remove the lock if it is still ours; it may have been taken over.
            if ((await readIfExists(lockPath)) === content) await unlinkIfExists(lockPath);
          },
        };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const text = await readIfExists(lockPath);
      if (text === undefined) continue;
      const owner = parseOwner(text);
      const state = owner ? ownerState(owner) : 'stale';
      if (state === 'held' && owner) {
        const who = owner.pid === process.pid ? 'this process' : `process ${owner.pid}`;
        throw new Error(
          `The embedded database directory ${dataDir} is already open in ${who}. ` +
            `PGlite allows only one open instance per data directory: stop the other ` +
            `instance, or delete ${lockPath} if you are sure it is stale.`,
        );
      }
      if (state === 'foreign-host' && owner) {
        logger?.warn(
          { lockPath, ownerHost: owner.hostname, ownerPid: owner.pid },
          'taking over an embedded database lock written on another host',
        );
      }
      await unlinkIfExists(lockPath);
    }
    throw new Error(`Could not take the lock ${lockPath} for the embedded database ${dataDir}`);
  } finally {
    await unlinkIfExists(temp);
  }
}
