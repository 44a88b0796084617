import { access, cp, mkdir, mkdtemp, readFile, rename, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

/** Where, inside a data directory, the embedded cluster template is cached. */
export const PGLITE_TEMPLATE_DIR = '.pglite-template';

/**
 * An initialised PGlite cluster, cached under `cacheRoot`, one per PGlite version. A new
 * embedded database is a copy of it: initdb costs seconds (CPU-bound WebAssembly), a copy a
 * fraction of one, so four services on a fresh laptop start in the time of one.
 *
 * It is built in a private directory and renamed into place, so processes that race to build
 * it (four hub-managed services starting together) never see a half-built one.
 *
 * `slim` drops the template databases too: a third of the files, for throwaway test copies.
 */
export async function pgliteTemplate(cacheRoot: string, opts: { slim?: boolean } = {}): Promise<string> {
  const require = createRequire(import.meta.url);
  const packageDir = dirname(dirname(require.resolve('@electric-sql/pglite')));
  const { version } = JSON.parse(await readFile(join(packageDir, 'package.json'), 'utf8')) as { version: string };
  // Bump the suffix whenever the way the template is built changes.
  const template = join(cacheRoot, `${version}-${opts.slim ? 'slim' : 'full'}-1`);
  if (await exists(join(template, 'PG_VERSION'))) return template;

  await mkdir(cacheRoot, { recursive: true });
  const building = await mkdtemp(`${template}.building-`);
  try {
    const { PGlite } = await import('@electric-sql/pglite');
    const pglite = await PGlite.create({ dataDir: building });
    if (opts.slim) {
      for (const name of ['template1', 'template0']) {
        await pglite.exec(`alter database ${name} is_template false`);
        await pglite.exec(`drop database ${name}`);
      }
    }
    await pglite.exec('checkpoint');
    await pglite.close();
    await rename(building, template);
  } catch (err) {
    // Another process finished first: use its copy.
    if (!(await exists(join(template, 'PG_VERSION')))) throw err;
  } finally {
    await rm(building, { recursive: true, force: true });
  }
  return template;
}

/** Fill an empty data directory with a copy of the cached cluster; a no-op for an existing one. */
export async function seedFromTemplate(location: string, cacheRoot: string, opts: { slim?: boolean } = {}): Promise<void> {
  if (await exists(join(location, 'PG_VERSION'))) return;
  const template = await pgliteTemplate(cacheRoot, opts);
  await cp(template, location, { recursive: true });
}

export async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
