import { readdirSync, readFileSync } from 'node:fs';

// Process bookkeeping reads /proc directly and synchronously: the same code must work inside a
// process 'exit' handler, where nothing asynchronous runs any more.

export interface ProcessInfo {
  pid: number;
  ppid: number;
  /** One-letter state from /proc/<pid>/stat; 'Z' is a zombie, already dead in all but name. */
  state: string;
  command: string;
}

function readStat(pid: number): ProcessInfo | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return undefined;
  }
  // The command name sits in parentheses and may itself contain spaces or parentheses.
  const close = stat.lastIndexOf(')');
  const fields = stat.slice(close + 2).split(' ');
  let command = stat.slice(stat.indexOf('(') + 1, close);
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
    if (cmdline) command = cmdline;
  } catch {
    // Raced with exit; the short name will do.
  }
  return { pid, ppid: Number(fields[1]), state: fields[0] ?? '?', command };
}

export function listProcesses(): ProcessInfo[] {
  const out: ProcessInfo[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const info = readStat(Number(entry));
    if (info) out.push(info);
  }
  return out;
}

/**
 * Processes started with `marker` (NAME=value) in their environment. The hub's children run in
 * sessions of their own and outlive a dead parent, so the inherited marker is the one reliable
 * way to find them once the tree is broken.
 */
export function markedProcesses(marker: string, processes = listProcesses()): ProcessInfo[] {
  const needle = Buffer.from(`\0${marker}\0`);
  return processes.filter((p) => {
    if (p.pid === process.pid) return false;
    try {
      const environ = Buffer.concat([Buffer.from([0]), readFileSync(`/proc/${p.pid}/environ`), Buffer.from([0])]);
      return environ.includes(needle);
    } catch {
      return false;
    }
  });
}

export function descendantsOf(root: number, processes = listProcesses()): ProcessInfo[] {
  const byParent = new Map<number, ProcessInfo[]>();
  for (const p of processes) {
    const siblings = byParent.get(p.ppid) ?? [];
    siblings.push(p);
    byParent.set(p.ppid, siblings);
  }
  const out: ProcessInfo[] = [];
  const queue = [root];
  const seen = new Set<number>(queue);
  while (queue.length > 0) {
    const pid = queue.shift() as number;
    for (const child of byParent.get(pid) ?? []) {
      if (seen.has(child.pid)) continue;
      seen.add(child.pid);
      out.push(child);
      queue.push(child.pid);
    }
  }
  return out;
}

/** The hub, everything below it, and everything carrying its marker; zombies left out. */
export function hubProcesses(hubPid: number, marker: string): ProcessInfo[] {
  const all = listProcesses();
  const found = new Map<number, ProcessInfo>();
  const hub = all.find((p) => p.pid === hubPid);
  if (hub) found.set(hub.pid, hub);
  for (const p of descendantsOf(hubPid, all)) found.set(p.pid, p);
  for (const p of markedProcesses(marker, all)) found.set(p.pid, p);
  return [...found.values()].filter((p) => p.state !== 'Z');
}

/** True while `pid` runs. A zombie counts as gone: it holds no ports, files or memory. */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  return readStat(pid)?.state !== 'Z';
}

export function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Already gone, which is what we wanted.
  }
}
