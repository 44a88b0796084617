import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { waitFor } from '@hubside/testing';

const CLI = fileURLToPath(new URL('../../packages/cli/bin/hubside.js', import.meta.url));

export type CliServiceName = 'auth-bridge' | 'profile-api' | 'usage-collector' | 'data-gateway';

/**
 * Services started through the `hubside` CLI, as in production, so `kill -9` hits a real
 * process. Every child is tracked, and `killAll` ends exactly these.
 */
export interface CliServices {
  start(name: CliServiceName, port: number, env: Record<string, string>): Promise<ChildProcess>;
  /** SIGKILL, then wait until the process is gone. */
  kill9(child: ChildProcess): Promise<void>;
  killAll(): Promise<void>;
  /** Everything the children wrote to stderr (their logs), for the leak check. */
  readonly logs: string[];
}

export function cliServices(): CliServices {
  const children = new Set<ChildProcess>();
  const logs: string[] = [];
  const kill9 = async (child: ChildProcess) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGKILL');
    await exited;
  };
  return {
    logs,
    kill9,
    killAll: async () => void (await Promise.all([...children].map(kill9))),
    async start(name, port, env) {
      const child = spawn(process.execPath, [CLI, name], {
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HUBSIDE_PORT: String(port), ...env },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      children.add(child);
      child.on('exit', () => children.delete(child));
      let stderr = '';
      child.stderr!.on('data', (c: Buffer) => {
        stderr += c.toString();
        logs.push(c.toString());
      });
      // A process that exits (a configuration error, say) fails the start at once, not at the deadline.
      let onExit: (() => void) | undefined;
      const exited = new Promise<never>((_, reject) => {
        onExit = () => reject(new Error(`${name} exited ${child.exitCode ?? child.signalCode}: ${stderr.slice(-800)}`));
        child.once('exit', onExit);
      });
      const healthy = waitFor(
        async () => {
          const res = await fetch(`http://127.0.0.1:${port}/services/${name}/health`).catch(() => undefined);
          return res?.ok ?? false;
        },
        { timeoutMs: 90_000, intervalMs: 200, what: `${name} answers health` },
      );
      try {
        await Promise.race([healthy, exited]);
      } finally {
        child.off('exit', onExit!);
        healthy.catch(() => undefined);
        exited.catch(() => undefined);
      }
      return child;
    },
  };
}
