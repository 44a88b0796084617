import { execFile } from 'node:child_process';
import { chmod, chown, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '@hubside/testing';

const run = promisify(execFile);
const BIN = '/usr/lib/postgresql/15/bin';

/**
 * A throwaway PostgreSQL cluster of our own, so a test can restart or kill it for real without
 * touching the shared server on 5432 that other tests use at the same time.
 */
export interface PgCluster {
  url: string;
  port: number;
  /** A real restart: the server shuts down (fast: open connections are terminated) and starts again. */
  restart(): Promise<void>;
  stop(): Promise<void>;
  start(): Promise<void>;
  destroy(): Promise<void>;
}

async function asPostgres(cmd: string, args: string[]): Promise<string> {
  // initdb refuses to run as root; the Debian package's `postgres` user owns the cluster.
  const { stdout } = await run('runuser', ['-u', 'postgres', '--', join(BIN, cmd), ...args], { timeout: 60_000 });
  return stdout;
}

export async function startPgCluster(): Promise<PgCluster> {
  const dir = await mkdtemp(join(tmpdir(), 'hubside-pg-fault-'));
  const data = join(dir, 'data');
  const { uid, gid } = await postgresIds();
  await chown(dir, uid, gid);
  await chmod(dir, 0o700);
  const port = await freePort();
  await asPostgres('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8']);
  const opts = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100`;
  const ctl = (action: string, extra: string[] = []) => asPostgres('pg_ctl', ['-D', data, '-o', opts, '-l', join(dir, 'server.log'), '-w', '-t', '30', ...extra, action]);
  await ctl('start');
  let running = true;
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    restart: async () => {
      await ctl('restart', ['-m', 'fast']);
      running = true;
    },
    stop: async () => {
      await ctl('stop', ['-m', 'fast']);
      running = false;
    },
    start: async () => {
      await ctl('start');
      running = true;
    },
    destroy: async () => {
      if (running) await ctl('stop', ['-m', 'immediate']).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function postgresIds(): Promise<{ uid: number; gid: number }> {
  const { stdout } = await run('id', ['postgres']);
  const uid = Number(/uid=(\d+)/.exec(stdout)?.[1]);
  const gid = Number(/gid=(\d+)/.exec(stdout)?.[1]);
  if (!Number.isInteger(uid) || !Number.isInteger(gid)) throw new Error(`no postgres user: ${stdout}`);
  return { uid, gid };
}
