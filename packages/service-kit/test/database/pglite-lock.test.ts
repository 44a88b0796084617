import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { lockDataDir } from '../../src/database/pglite-lock.js';

function startTicks(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

describe('PGlite data directory lock', () => {
  let dir: string;
  let lockPath: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hubside-lock-'));
    lockPath = join(dir, 'svc.lock');
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const writeOwner = (owner: object) => writeFile(lockPath, JSON.stringify(owner));

  it('refuses a second lock in the same process and frees it on release', async () => {
    const lock = await lockDataDir(lockPath, dir);
    await expect(lockDataDir(lockPath, dir)).rejects.toThrow(/already open in this process/);
    await lock.release();
    const again = await lockDataDir(lockPath, dir);
    await again.release();
    // No lock or temporary files are left behind.
    expect(await readdir(dir)).toEqual([]);
  });

  it('refuses a lock held by another live process', async () => {
    const pid = process.ppid;
    await writeOwner({ pid, hostname: hostname(), startTicks: startTicks(pid), timeOrigin: 1 });
    await expect(lockDataDir(lockPath, dir)).rejects.toThrow(new RegExp(`already open in process ${pid}`));
  });

  it('takes over a lock whose process has exited', async () => {
    const { pid } = spawnSync(process.execPath, ['-e', '0']);
    await writeOwner({ pid, hostname: hostname(), startTicks: '1', timeOrigin: 1 });
    const lock = await lockDataDir(lockPath, dir);
    expect(JSON.parse(await readFile(lockPath, 'utf8'))).toMatchObject({ pid: process.pid });
    await lock.release();
  });

  it.skipIf(startTicks(process.pid) === null)('takes over a lock whose pid now belongs to another process', async () => {
    await writeOwner({ pid: process.ppid, hostname: hostname(), startTicks: '1', timeOrigin: 1 });
    const lock = await lockDataDir(lockPath, dir);
    await lock.release();
  });

  it('takes over a lock left by an earlier process with our pid (container restart)', async () => {
    await writeOwner({ pid: process.pid, hostname: hostname(), startTicks: '1', timeOrigin: 1 });
    const lock = await lockDataDir(lockPath, dir);
    await lock.release();
  });

  it('takes over a lock from another host with a warning, and a garbled one silently', async () => {
    const warnings: object[] = [];
    await writeOwner({ pid: 1, hostname: 'elsewhere', startTicks: null, timeOrigin: 1 });
    const lock = await lockDataDir(lockPath, dir, { warn: (obj) => warnings.push(obj) });
    expect(warnings).toEqual([expect.objectContaining({ ownerHost: 'elsewhere' })]);
    await lock.release();

    await writeFile(lockPath, '{"pid":');
    await (await lockDataDir(lockPath, dir)).release();
  });

  it('does not remove a lock that another process took over', async () => {
    const lock = await lockDataDir(lockPath, dir);
    await writeOwner({ pid: process.ppid, hostname: hostname(), startTicks: null, timeOrigin: 1 });
    await lock.release();
    expect(JSON.parse(await readFile(lockPath, 'utf8'))).toMatchObject({ pid: process.ppid });
  });
});
