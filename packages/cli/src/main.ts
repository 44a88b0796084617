import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  ConfigError,
  SERVICE_NAMES,
  createDatabase,
  loadService,
  migrate,
  PGLITE_TEMPLATE_DIR,
  pgliteTemplate,
  runService,
  schemaFor,
} from '@hubside/service-kit';
import type { ServiceDefinition, ServiceName, Tracing } from '@hubside/service-kit';
import closeWithGrace from 'close-with-grace';
import { checkCommunityFile, parseCommunityYaml } from './check-config.js';
import type { CheckResult } from './check-config.js';

const USAGE = `Usage: hubside <command> [options]

Commands:
  auth-bridge | profile-api | usage-collector | data-gateway
                          Start one service from the hub's environment
                          (JUPYTERHUB_SERVICE_URL, JUPYTERHUB_API_TOKEN, ...), as a
                          hub-managed service does: 'command': ['npx', 'hubside', 'profile-api']
  start [--config FILE]   Start all four services on 127.0.0.1, ports 9101-9104
                          (HUBSIDE_PORT_BASE changes the first port)
  check-config FILE       Check a community file: every section against its schema and
                          every name one section uses against where it is defined
                          (groups, profiles, datasets, currency); prints every problem
  migrate [SERVICE...]    Apply database migrations (all services by default)
  help                    Show this text

Environment: HUBSIDE_CONFIG (community file), DATABASE_URL (PostgreSQL; otherwise embedded
PGlite in HUBSIDE_DATA_DIR, default .hubside/data), JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN
(the hub to use), HUBSIDE_LOG_LEVEL.
`;

// Loaded lazily: tracing must start before the HTTP stack is imported.
async function definition(name: ServiceName): Promise<ServiceDefinition> {
  switch (name) {
    case 'auth-bridge':
      return (await import('@hubside/auth-bridge')).service;
    case 'profile-api':
      return (await import('@hubside/profile-api')).service;
    case 'usage-collector':
      return (await import('@hubside/usage-collector')).service;
    case 'data-gateway':
      return (await import('@hubside/data-gateway')).service;
  }
}

function isServiceName(value: string | undefined): value is ServiceName {
  return (SERVICE_NAMES as readonly string[]).includes(value ?? '');
}

// Variables that describe one hub-managed service; `start` runs four, so it must not share them.
const SINGLE_SERVICE_VARS = [
  'JUPYTERHUB_SERVICE_NAME',
  'JUPYTERHUB_SERVICE_URL',
  'JUPYTERHUB_SERVICE_PREFIX',
  'JUPYTERHUB_CLIENT_ID',
  'JUPYTERHUB_OAUTH_CALLBACK_URL',
  'JUPYTERHUB_OAUTH_ACCESS_SCOPES',
  'HUBSIDE_PORT',
];

async function startOne(name: ServiceName, tracing: Tracing | null): Promise<number> {
  const running = await runService(await definition(name), { onClose: async () => tracing?.shutdown() });
  running.app.log.info({ url: running.url }, `${name} listening`);
  return 0;
}

async function startAll(args: string[], tracing: Tracing | null): Promise<number> {
  const { values } = parseArgs({ args, options: { config: { type: 'string' } }, strict: true });
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of SINGLE_SERVICE_VARS) delete env[key];
  if (values.config) env.HUBSIDE_CONFIG = values.config;
  const base = Number(env.HUBSIDE_PORT_BASE ?? 9101);
  if (!Number.isInteger(base) || base < 0 || base > 65_531) {
    throw new ConfigError('environment', [`HUBSIDE_PORT_BASE: must be a port number (0 picks free ports), got ${JSON.stringify(env.HUBSIDE_PORT_BASE)}`]);
  }
  const portOf = (i: number) => (base === 0 ? 0 : base + i);
  const defs = await Promise.all(SERVICE_NAMES.map((n) => definition(n)));
  // Validate every section before starting anything, so one typo doesn't leave half a system up.
  defs.forEach((def, i) => loadService(def, env, { port: portOf(i) }));
  const first = loadService(defs[0]!, env, { port: portOf(0) });
  if (!first.settings.databaseUrl) {
    // Build the embedded cluster template once, so the four databases are copies of it rather
    // than four initdb runs competing for the CPU.
    await pgliteTemplate(join(first.settings.dataDir, PGLITE_TEMPLATE_DIR));
  }
  // In parallel: each opens its own embedded database, which is most of the start-up time.
  const started = await Promise.allSettled(
    defs.map((def, i) => runService(def, { env, defaults: { port: portOf(i) }, handleSignals: false })),
  );
  const running = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await Promise.allSettled(running.map((r) => r.close()));
    throw failed.reason;
  }
  closeWithGrace({ delay: 10_000 }, async () => {
    await Promise.allSettled(running.map((r) => r.close()));
    await tracing?.shutdown();
  });
  const hub = env.JUPYTERHUB_API_URL ? `using the hub at ${env.JUPYTERHUB_API_URL}` : 'no hub connected (set JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN)';
  process.stdout.write(`\nHubside is running, ${hub}:\n`);
  for (const [i, r] of running.entries()) {
    process.stdout.write(`  ${SERVICE_NAMES[i]!.padEnd(16)} ${r.url}   (health: ${r.url}health)\n`);
  }
  process.stdout.write('\n');
  return 0;
}

async function checkFile(file: string): Promise<CheckResult> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    return { problems: [`(file): cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`], notes: [] };
  }
  const parsed = parseCommunityYaml(text);
  if (!parsed.ok) return { problems: parsed.problems, notes: [] };
  const definitions = await Promise.all(SERVICE_NAMES.map((name) => definition(name)));
  return checkCommunityFile(parsed.value, definitions);
}

async function checkConfig(args: string[]): Promise<number> {
  const file = args[0];
  if (!file || args.length > 1) {
    process.stderr.write('Usage: hubside check-config FILE\n');
    return 64;
  }
  const { problems, notes } = await checkFile(file);
  const noted = notes.map((n) => `  note: ${n}\n`).join('');
  if (problems.length > 0) {
    process.stderr.write(`${file}: ${problems.length} problem${problems.length > 1 ? 's' : ''}\n${problems.map((p) => `  - ${p}`).join('\n')}\n${noted}`);
    return 1;
  }
  process.stdout.write(`${file}: OK\n${noted}`);
  return 0;
}

async function migrateCommand(args: string[]): Promise<number> {
  const names = args.length > 0 ? args : [...SERVICE_NAMES];
  const unknown = names.filter((n) => !isServiceName(n));
  if (unknown.length > 0) {
    process.stderr.write(`Unknown service${unknown.length > 1 ? 's' : ''}: ${unknown.join(', ')}. Choose from ${SERVICE_NAMES.join(', ')}.\n`);
    return 64;
  }
  for (const name of names as ServiceName[]) {
    const def = await definition(name);
    const { settings } = loadService(def, process.env);
    const database = await createDatabase({ databaseUrl: settings.databaseUrl, dataDir: settings.dataDir, schema: schemaFor(name) });
    try {
      const { applied } = await migrate(database, def.migrations ?? {});
      process.stdout.write(`${name}: ${applied.length === 0 ? 'up to date' : `applied ${applied.join(', ')}`} (${database.kind})\n`);
    } finally {
      await database.destroy();
    }
  }
  return 0;
}

export interface MainOptions {
  /** Started by the entry point before this module loaded, so the HTTP stack is instrumented. */
  tracing?: Tracing | null;
}

export async function main(argv: string[], opts: MainOptions = {}): Promise<number | undefined> {
  const tracing = opts.tracing ?? null;
  const [command, ...rest] = argv;
  try {
    if (isServiceName(command)) return await startOne(command, tracing);
    switch (command) {
      case 'start':
        return await startAll(rest, tracing);
      case 'check-config':
        return await checkConfig(rest);
      case 'migrate':
        return await migrateCommand(rest);
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(USAGE);
        return command === undefined ? 64 : 0;
      default:
        process.stderr.write(`Unknown command "${command}".\n\n${USAGE}`);
        return 64;
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      return 2;
    }
    throw err;
  }
}
