/**
 * One real Ceph RGW (S3 + STS) per test file, on loopback ports, in a temp dir, on memstore.
 * Follows /work/shared/ceph-rgw-recipe.md. Every daemon runs in the foreground as our child, so
 * stop() kills exactly the processes this helper started, then removes the directory.
 */
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort, waitFor } from '@hubside/testing';

const run = promisify(execFile);

export interface CephRgw {
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  roleArn: string;
  dir: string;
  /** radosgw-admin with this cluster's config. */
  admin(args: string[]): Promise<string>;
  stop(): Promise<void>;
}

export interface StartCephRgwOptions {
  /** `rgw sts min session duration` (seconds); the RGW default is 900. */
  minSessionDurationSeconds?: number;
}

const letters = (n: number) =>
  Array.from(randomBytes(n), (b) => String.fromCharCode(97 + (b % 26))).join('');

export async function startCephRgw(opts: StartCephRgwOptions = {}): Promise<CephRgw> {
  const dir = await mkdtemp(join(tmpdir(), 'hubside-ceph-'));
  const children: ChildProcess[] = [];
  const stop = async () => {
    for (const child of children.reverse()) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    }
    if (!process.env.HUBSIDE_KEEP_CEPH) await rm(dir, { recursive: true, force: true });
  };
  try {
    const [monV2, monV1, rgwPort] = [await freePort(), await freePort(), await freePort()];
    const fsid = randomUUID();
    await Promise.all(['run', 'log', 'mon', 'osd0', 'rgw'].map((d) => mkdir(join(dir, d))));
    const conf = join(dir, 'ceph.conf');
    const mon = `[v2:127.0.0.1:${monV2},v1:127.0.0.1:${monV1}]`;
    await writeFile(
      conf,
      [
        '[global]',
        `fsid = ${fsid}`,
        `mon host = v2:127.0.0.1:${monV2},v1:127.0.0.1:${monV1}`,
        'public addr = 127.0.0.1',
        'auth cluster required = none',
        'auth service required = none',
        'auth client required = none',
        'ms mon client mode = crc secure',
        'ms client mode = crc secure',
        'osd pool default size = 1',
        'osd pool default min size = 1',
        'mon allow pool size one = true',
        'osd pool default pg autoscale mode = off',
        'osd pool default pg num = 8',
        'mon max pg per osd = 1000',
        'osd crush chooseleaf type = 0',
        'osd objectstore = memstore',
        'memstore device bytes = 1073741824',
        `run dir = ${dir}/run`,
        `admin socket = ${dir}/run/$name.asok`,
        `pid file = ${dir}/run/$name.pid`,
        `log file = ${dir}/log/$name.log`,
        `keyring = ${dir}/keyring`,
        '[mon.a]',
        `mon data = ${dir}/mon`,
        '[osd.0]',
        `osd data = ${dir}/osd0`,
        '[client.rgw.a]',
        `rgw frontends = beast endpoint=127.0.0.1:${rgwPort}`,
        `rgw data = ${dir}/rgw`,
        'rgw s3 auth use sts = true',
        ...(process.env.HUBSIDE_KEEP_CEPH ? ['debug rgw = 20'] : []),
        `rgw sts key = ${letters(16)}`,
        ...(opts.minSessionDurationSeconds ? [`rgw sts min session duration = ${opts.minSessionDurationSeconds}`] : []),
        '',
      ].join('\n'),
    );
    const daemon = (cmd: string, args: string[]) => {
      const child = spawn(cmd, ['-f', '-c', conf, ...args], { stdio: 'ignore' });
      children.push(child);
      return child;
    };
    const ceph = async (args: string[]) => (await run('ceph', ['-c', conf, '--connect-timeout', '10', ...args])).stdout;
    const admin = async (args: string[]) => (await run('radosgw-admin', ['-c', conf, ...args])).stdout;

    await run('ceph-authtool', ['--create-keyring', join(dir, 'keyring'), '--gen-key', '-n', 'mon.', '--cap', 'mon', 'allow *']);
    await run('monmaptool', ['--create', '--fsid', fsid, '--addv', 'a', mon, join(dir, 'monmap')]);
    await run('ceph-mon', ['-c', conf, '--mkfs', '-i', 'a', '--monmap', join(dir, 'monmap'), '--keyring', join(dir, 'keyring')]);
    daemon('ceph-mon', ['-i', 'a']);
    const osdUuid = randomUUID();
    const id = (await waitFor(async () => (await ceph(['osd', 'new', osdUuid])).trim(), { timeoutMs: 30_000, intervalMs: 200, what: 'ceph-mon answers' }));
    await run('ceph-osd', ['-c', conf, '-i', id, '--mkfs', '--osd-uuid', osdUuid]);
    daemon('ceph-osd', ['-i', id]);
    await waitFor(async () => (await ceph(['osd', 'stat'])).includes('1 up'), { timeoutMs: 60_000, intervalMs: 250, what: 'the OSD is up' });
    daemon('radosgw', ['-n', 'client.rgw.a']);
    const endpoint = `http://127.0.0.1:${rgwPort}`;
    await waitFor(async () => (await fetch(endpoint)).status < 500, { timeoutMs: 90_000, intervalMs: 250, what: 'radosgw answers' });

    const accessKeyId = `GW${letters(18).toUpperCase()}`;
    const secretAccessKey = letters(40);
    await admin(['user', 'create', '--uid=gateway', '--display-name=gw', `--access-key=${accessKeyId}`, `--secret-key=${secretAccessKey}`]);
    await admin(['caps', 'add', '--uid=gateway', '--caps=roles=*']);
    await admin([
      'role', 'create', '--role-name=hub-user',
      `--assume-role-policy-doc=${JSON.stringify({ Version: '2012-10-17', Statement: [{ Effect: 'Allow', Principal: { AWS: ['arn:aws:iam:::user/gateway'] }, Action: ['sts:AssumeRole'] }] })}`,
    ]);
    await admin([
      'role-policy', 'put', '--role-name=hub-user', '--policy-name=s3all',
      `--policy-doc=${JSON.stringify({ Version: '2012-10-17', Statement: [{ Effect: 'Allow', Action: ['s3:*'], Resource: ['arn:aws:s3:::*'] }] })}`,
    ]);
    return { endpoint, region: 'us-east-1', accessKeyId, secretAccessKey, roleArn: 'arn:aws:iam:::role/hub-user', dir, admin, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
