/** The Helm chart, with a real helm (v4) binary and the Kubernetes schemas of kubernetes-models. */
import { existsSync, readdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { parse } from 'yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { CHART, EXAMPLES, REPO, SERVICES, helm, k8sTools, readText, template, validateObject } from './tools.js';
import type { K8sObject, Tools } from './tools.js';

let tools: Tools;
beforeAll(async () => {
  tools = await k8sTools();
});

const HUBSIDE_EXAMPLES = readdirSync(EXAMPLES).filter((f) => f.startsWith('hubside-') && f.endsWith('.yaml'));
const PRODUCTION = join(EXAMPLES, 'hubside-production.yaml');

function ofKind(objects: K8sObject[], kind: string): K8sObject[] {
  return objects.filter((o) => o.kind === kind);
}

function deployment(objects: K8sObject[], svc: string): K8sObject {
  const d = ofKind(objects, 'Deployment').find((o) => o.metadata.labels?.['app.kubernetes.io/component'] === svc);
  if (!d) throw new Error(`no Deployment for ${svc}`);
  return d;
}

function container(d: K8sObject): any {
  return d.spec.template.spec.containers[0];
}

function envOf(d: K8sObject): Map<string, any> {
  return new Map((container(d).env as any[]).map((e) => [e.name as string, e]));
}

async function validateAll(objects: K8sObject[]): Promise<void> {
  expect(objects.length).toBeGreaterThan(0);
  for (const obj of objects) {
    const known = await validateObject(obj);
    if (!known) {
      // kubernetes-models has no CRDs: check the ServiceMonitor's required shape by hand.
      expect(obj.kind, `no schema for ${obj.apiVersion}/${obj.kind}`).toBe('ServiceMonitor');
      expect(obj.apiVersion).toBe('monitoring.coreos.com/v1');
      expect(obj.spec.selector.matchLabels).toBeTypeOf('object');
      expect(obj.spec.endpoints.length).toBeGreaterThan(0);
    }
  }
}

async function refused(args: string[]): Promise<string> {
  const r = await helm(tools, ['template', 'hubside', CHART, ...args]);
  expect(r.code, `helm template ${args.join(' ')} should fail`).not.toBe(0);
  return r.stderr;
}

describe('the Kubernetes schema check', () => {
  it('catches a broken object, so a pass means something', async () => {
    const [d] = ofKind(await template(tools), 'Deployment');
    const broken = structuredClone(d!);
    broken.spec.replicas = 'two';
    await expect(validateObject(broken)).rejects.toThrow(/replicas/);
    const noContainers = structuredClone(d!);
    delete noContainers.spec.template.spec.containers;
    await expect(validateObject(noContainers)).rejects.toThrow(/containers/);
  });
});

describe('helm lint --strict', () => {
  it('passes with the default values', async () => {
    const r = await helm(tools, ['lint', '--strict', CHART]);
    expect(r.stderr + r.stdout).toContain('0 chart(s) failed');
    expect(r.code).toBe(0);
  });

  it.each(HUBSIDE_EXAMPLES)('passes with charts/examples/%s', async (file) => {
    const r = await helm(tools, ['lint', '--strict', CHART, '-f', join(EXAMPLES, file)]);
    expect(r.stdout).toContain('0 chart(s) failed');
    expect(r.code).toBe(0);
  });
});

describe('helm template', () => {
  it('renders the defaults: all four services, every object valid', async () => {
    const objects = await template(tools);
    await validateAll(objects);
    expect(ofKind(objects, 'Deployment').map((d) => d.metadata.name).sort()).toEqual(SERVICES.map((s) => `hubside-${s}`).sort());
    expect(ofKind(objects, 'Service')).toHaveLength(4);
    expect(ofKind(objects, 'NetworkPolicy')).toHaveLength(4);
    expect(ofKind(objects, 'PodDisruptionBudget')).toHaveLength(4);
    expect(ofKind(objects, 'ConfigMap')).toHaveLength(1);
    // Optional parts stay off by default.
    expect(ofKind(objects, 'HorizontalPodAutoscaler')).toHaveLength(0);
    expect(ofKind(objects, 'ServiceMonitor')).toHaveLength(0);
  });

  it.each(HUBSIDE_EXAMPLES)('renders charts/examples/%s with every object valid', async (file) => {
    await validateAll(await template(tools, ['-f', join(EXAMPLES, file)]));
  });

  it('renders the production example with all four services, HPA, ServiceMonitor, PDB and NetworkPolicies', async () => {
    const objects = await template(tools, ['-f', PRODUCTION]);
    expect(ofKind(objects, 'Deployment')).toHaveLength(4);
    expect(ofKind(objects, 'NetworkPolicy')).toHaveLength(4);
    expect(ofKind(objects, 'PodDisruptionBudget')).toHaveLength(4);
    expect(ofKind(objects, 'ServiceMonitor')).toHaveLength(4);
    const hpa = ofKind(objects, 'HorizontalPodAutoscaler');
    expect(hpa.map((h) => h.spec.scaleTargetRef.name)).toEqual(['hubside-profile-api']);
    // The autoscaler owns the replica count.
    expect(deployment(objects, 'profile-api').spec.replicas).toBeUndefined();
    expect(deployment(objects, 'usage-collector').spec.replicas).toBe(2);
    // PostgreSQL: rolling updates, no PVCs.
    expect(deployment(objects, 'usage-collector').spec.strategy.type).toBe('RollingUpdate');
    expect(ofKind(objects, 'PersistentVolumeClaim')).toHaveLength(0);
  });

  it('leaves a disabled service out entirely', async () => {
    const objects = await template(tools, ['-f', join(EXAMPLES, 'hubside-small.yaml')]);
    const components = new Set(objects.map((o) => o.metadata.labels?.['app.kubernetes.io/component']).filter(Boolean));
    expect([...components].sort()).toEqual(['profile-api', 'usage-collector']);
  });
});

describe('the contract every service keeps', () => {
  it('runs non-root with a read-only root filesystem and no capabilities, and no service-account token', async () => {
    for (const d of ofKind(await template(tools, ['-f', PRODUCTION]), 'Deployment')) {
      const pod = d.spec.template.spec;
      const sc = container(d).securityContext;
      expect(pod.securityContext.runAsNonRoot).toBe(true);
      expect(pod.securityContext.runAsUser).toBeGreaterThan(0);
      expect(sc.runAsNonRoot).toBe(true);
      expect(sc.readOnlyRootFilesystem).toBe(true);
      expect(sc.allowPrivilegeEscalation).toBe(false);
      expect(sc.capabilities.drop).toEqual(['ALL']);
      expect(pod.automountServiceAccountToken).toBe(false);
      // A read-only root needs a writable /tmp.
      expect(container(d).volumeMounts.map((m: any) => m.mountPath)).toContain('/tmp');
      expect(container(d).resources.requests.memory).toBeTruthy();
      expect(container(d).resources.limits.memory).toBeTruthy();
    }
  });

  it("takes each token from the z2jh hub Secret key hub.services.<name>.apiToken, secret name configurable", async () => {
    for (const svc of SERVICES) {
      const token = envOf(deployment(await template(tools), svc)).get('JUPYTERHUB_API_TOKEN');
      expect(token.valueFrom.secretKeyRef).toEqual({ name: 'hub', key: `hub.services.${svc}.apiToken` });
      expect(token.value).toBeUndefined();
    }
    const renamed = await template(tools, ['--set', 'hub.secret.name=other-hub', '--set', 'services.profile-api.hubServiceName=profiles']);
    const ref = envOf(deployment(renamed, 'profile-api')).get('JUPYTERHUB_API_TOKEN').valueFrom.secretKeyRef;
    expect(ref).toEqual({ name: 'other-hub', key: 'hub.services.profiles.apiToken' });
    expect(envOf(deployment(renamed, 'profile-api')).get('JUPYTERHUB_SERVICE_PREFIX').value).toBe('/services/profiles/');
  });

  it('points at the in-cluster hub by default and sets the service environment JupyterHub would', async () => {
    const d = deployment(await template(tools), 'usage-collector');
    const env = envOf(d);
    expect(env.get('JUPYTERHUB_API_URL').value).toBe('http://hub:8081/hub/api');
    expect(env.get('JUPYTERHUB_SERVICE_PREFIX').value).toBe('/services/usage-collector/');
    expect(env.get('JUPYTERHUB_SERVICE_URL').value).toBe('http://0.0.0.0:8080');
    expect(env.get('JUPYTERHUB_CLIENT_ID').value).toBe('service-usage-collector');
    expect(env.get('JUPYTERHUB_OAUTH_CALLBACK_URL').value).toBe('/services/usage-collector/oauth_callback');
    expect(env.get('HUBSIDE_METRICS_PUBLIC').value).toBe('false');
    expect(container(d).args).toEqual(['usage-collector']);
    for (const probe of ['startupProbe', 'livenessProbe', 'readinessProbe']) {
      expect(container(d)[probe].httpGet).toEqual({ path: '/services/usage-collector/health', port: 'http' });
    }
    // A hub under a base URL moves every prefix.
    const based = envOf(deployment(await template(tools, ['--set', 'hub.baseUrl=/jh/']), 'profile-api'));
    expect(based.get('JUPYTERHUB_SERVICE_PREFIX').value).toBe('/jh/services/profile-api/');
  });

  it('without PostgreSQL: PGlite on a kept volume per service, Recreate strategy, no DATABASE_URL', async () => {
    const objects = await template(tools);
    const pvcs = ofKind(objects, 'PersistentVolumeClaim');
    expect(pvcs).toHaveLength(4);
    expect(pvcs[0]!.metadata.annotations?.['helm.sh/resource-policy']).toBe('keep');
    for (const svc of SERVICES) {
      const d = deployment(objects, svc);
      expect(d.spec.strategy.type).toBe('Recreate');
      expect(d.spec.replicas).toBe(1);
      expect(envOf(d).has('DATABASE_URL')).toBe(false);
      expect(envOf(d).get('HUBSIDE_DATA_DIR').value).toBe('/var/lib/hubside');
      const data = d.spec.template.spec.volumes.find((v: any) => v.name === 'data');
      expect(data.persistentVolumeClaim.claimName).toBe(`hubside-${svc}-data`);
    }
  });

  it('reads DATABASE_URL from a Secret: an existing one, or one the chart makes from database.url', async () => {
    const existing = envOf(deployment(await template(tools, ['--set', 'database.existingSecret=pg']), 'profile-api'));
    expect(existing.get('DATABASE_URL').valueFrom.secretKeyRef).toEqual({ name: 'pg', key: 'DATABASE_URL' });
    const objects = await template(tools, ['--set', 'database.url=postgres://u:p@db:5432/hubside']);
    const secret = ofKind(objects, 'Secret');
    expect(secret).toHaveLength(1);
    expect(secret[0]!.stringData).toEqual({ DATABASE_URL: 'postgres://u:p@db:5432/hubside' });
    expect(envOf(deployment(objects, 'profile-api')).get('DATABASE_URL').valueFrom.secretKeyRef.name).toBe(secret[0]!.metadata.name);
    // The URL never appears as a plain env value.
    for (const d of ofKind(objects, 'Deployment')) expect(JSON.stringify(d)).not.toContain('u:p@db');
  });

  it('puts the community config in a ConfigMap mounted at HUBSIDE_CONFIG, and rolls pods when it changes', async () => {
    const objects = await template(tools, ['-f', PRODUCTION]);
    const cm = ofKind(objects, 'ConfigMap')[0]!;
    const community = parse(cm.data!['community.yaml']!) as Record<string, any>;
    expect(community.community.name).toBe('Example University');
    expect(community['usage-collector'].pollSeconds).toBe(60);
    const d = deployment(objects, 'usage-collector');
    expect(envOf(d).get('HUBSIDE_CONFIG').value).toBe('/etc/hubside/community.yaml');
    expect(d.spec.template.spec.volumes.find((v: any) => v.name === 'config').configMap.name).toBe(cm.metadata.name);
    const other = deployment(await template(tools, ['-f', PRODUCTION, '--set', 'config.usage-collector.pollSeconds=30']), 'usage-collector');
    expect(other.spec.template.metadata.annotations['checksum/config']).not.toBe(d.spec.template.metadata.annotations['checksum/config']);
  });

  it('takes a per-service image and token location, and the public hub address for browser redirects', async () => {
    const objects = await template(tools, [
      '--set', 'services.data-gateway.image.repository=registry.example.org/gw',
      '--set', 'services.data-gateway.apiToken.secretName=gw-token',
      '--set', 'services.data-gateway.apiToken.secretKey=token',
      '--set', 'hub.publicUrl=https://hub.example.org',
    ]);
    const d = deployment(objects, 'data-gateway');
    expect(container(d).image).toBe('registry.example.org/gw:0.1.0');
    expect(envOf(d).get('JUPYTERHUB_API_TOKEN').valueFrom.secretKeyRef).toEqual({ name: 'gw-token', key: 'token' });
    expect(envOf(d).get('JUPYTERHUB_HOST').value).toBe('https://hub.example.org');
    expect(container(deployment(objects, 'profile-api')).image).toBe('ghcr.io/hubside/profile-api:0.1.0');
  });

  it('passes per-service settings (env and extraEnv) to that service only', async () => {
    const objects = await template(tools, ['-f', PRODUCTION]);
    expect(envOf(deployment(objects, 'data-gateway')).get('AWS_REGION').value).toBe('eu-west-1');
    expect(envOf(deployment(objects, 'profile-api')).has('AWS_REGION')).toBe(false);
    expect(envOf(deployment(objects, 'auth-bridge')).get('EXAMPLE_UNI_CLIENT_SECRET').valueFrom.secretKeyRef.name).toBe('hubside-auth-bridge-upstreams');
  });
});

describe('NetworkPolicies, PDB, HPA, ServiceMonitor', () => {
  it('lets hub → service, proxy → service and service → hub API through, and nothing else inbound', async () => {
    const objects = await template(tools, ['-f', PRODUCTION]);
    const np = ofKind(objects, 'NetworkPolicy').find((o) => o.metadata.name === 'hubside-usage-collector')!;
    expect(np.spec.policyTypes).toEqual(['Ingress', 'Egress']);
    const from = np.spec.ingress.map((r: any) => r.from[0]);
    expect(from[0].podSelector.matchLabels).toEqual({ app: 'jupyterhub', component: 'hub' });
    expect(from[1].podSelector.matchLabels).toEqual({ app: 'jupyterhub', component: 'proxy' });
    // The third rule is Prometheus (ServiceMonitor on).
    expect(from[2].namespaceSelector.matchLabels).toEqual({ 'kubernetes.io/metadata.name': 'monitoring' });
    expect(np.spec.ingress).toHaveLength(3);
    const toHub = np.spec.egress[0];
    expect(toHub.to[0].podSelector.matchLabels.component).toBe('hub');
    expect(toHub.ports).toEqual([{ port: 8081, protocol: 'TCP' }]);
    const toDb = np.spec.egress.find((r: any) => r.ports?.[0]?.port === 5432);
    expect(toDb.to).toEqual([{ ipBlock: { cidr: '10.20.0.0/24' } }]);
    // Only the services that talk to IdPs and clouds reach the internet.
    const publicEgress = (name: string) =>
      ofKind(objects, 'NetworkPolicy').find((o) => o.metadata.name === name)!.spec.egress.some((r: any) => r.to?.[0]?.ipBlock?.cidr === '0.0.0.0/0');
    expect(publicEgress('hubside-auth-bridge')).toBe(true);
    expect(publicEgress('hubside-data-gateway')).toBe(true);
    expect(publicEgress('hubside-usage-collector')).toBe(false);
    // z2jh's hub NetworkPolicy only admits pods with this label to the hub API.
    expect(deployment(objects, 'usage-collector').spec.template.metadata.labels['hub.jupyter.org/network-access-hub']).toBe('true');
  });

  it('renders none of them when switched off', async () => {
    const objects = await template(tools, ['--set', 'networkPolicy.enabled=false', '--set', 'podDisruptionBudget.enabled=false']);
    expect(ofKind(objects, 'NetworkPolicy')).toHaveLength(0);
    expect(ofKind(objects, 'PodDisruptionBudget')).toHaveLength(0);
  });

  it("scrapes {prefix}metrics with the service's own hub token unless metrics are public", async () => {
    const sm = ofKind(await template(tools, ['-f', PRODUCTION]), 'ServiceMonitor').find((o) => o.metadata.name === 'hubside-profile-api')!;
    expect(sm.metadata.labels?.release).toBe('kube-prometheus-stack');
    expect(sm.spec.endpoints[0].path).toBe('/services/profile-api/metrics');
    expect(sm.spec.endpoints[0].authorization.credentials).toEqual({ name: 'hub', key: 'hub.services.profile-api.apiToken' });
    const open = ofKind(await template(tools, ['-f', PRODUCTION, '--set', 'metricsPublic=true']), 'ServiceMonitor')[0]!;
    expect(open.spec.endpoints[0].authorization).toBeUndefined();
  });
});

describe('bad values are refused at install time', () => {
  it('a negative replica count', async () => {
    const err = await refused(['--set', 'services.profile-api.replicas=-1']);
    expect(err).toContain('/services/profile-api/replicas');
    expect(err).toMatch(/minimum: got -1, want 0/);
  });

  it('a missing or empty hub URL', async () => {
    expect(await refused(['--set', 'hub.apiUrl=null'])).toMatch(/at '\/hub': missing property 'apiUrl'/);
    expect(await refused(['--set', 'hub.apiUrl='])).toMatch(/\/hub\/apiUrl/);
    expect(await refused(['--set', 'hub.apiUrl=hub:8081'])).toMatch(/\/hub\/apiUrl.*does not match pattern/);
  });

  it('an unknown service name', async () => {
    const err = await refused(['--set', 'services.profile_api.enabled=true']);
    expect(err).toMatch(/at '\/services': additional properties 'profile_api' not allowed/);
  });

  it('a typo in a service setting', async () => {
    expect(await refused(['--set', 'services.data-gateway.replica=2'])).toMatch(/additional properties 'replica' not allowed/);
  });

  it('more than one usage-collector replica (or an autoscaler) on PGlite, which cannot be shared', async () => {
    const err = await refused(['--set', 'services.usage-collector.replicas=2']);
    expect(err).toContain('services.usage-collector: more than one replica');
    expect(err).toContain('needs database.existingSecret or database.url');
    expect(await refused(['--set', 'services.profile-api.autoscaling.enabled=true'])).toContain('services.profile-api: more than one replica');
    // With PostgreSQL it is fine.
    const ok = await template(tools, ['--set', 'services.usage-collector.replicas=3', '--set', 'database.existingSecret=pg']);
    expect(deployment(ok, 'usage-collector').spec.replicas).toBe(3);
  });
});

describe('the z2jh example (charts/examples/jupyterhub.yaml)', () => {
  const z2jh = parse(readText(join(EXAMPLES, 'jupyterhub.yaml'))) as { hub: any };

  it("points every hub.services url at the Service the chart renders for it", async () => {
    const objects = await template(tools, ['-f', PRODUCTION]);
    for (const svc of SERVICES) {
      const entry = z2jh.hub.services[svc];
      expect(entry, `hub.services.${svc}`).toBeTruthy();
      const service = ofKind(objects, 'Service').find((o) => o.metadata.labels?.['app.kubernetes.io/component'] === svc)!;
      expect(entry.url).toBe(`http://${service.metadata.name}:${service.spec.ports[0].port}`);
      expect(entry.oauth_no_confirm).toBe(true);
    }
  });

  it('gives each service a role with its least scopes, and never admin', () => {
    for (const svc of SERVICES) {
      const role = Object.values(z2jh.hub.loadRoles as Record<string, any>).find((r) => r.services?.includes(svc));
      expect(role, `a role for ${svc}`).toBeTruthy();
      expect(role.scopes).toContain('read:metrics');
      for (const scope of role.scopes as string[]) expect(scope).not.toMatch(/^(admin|admin:|tokens|servers$|users$)/);
    }
  });

  it("lets profile-api's spawn page start the user's server, and usage-collector list the users it polls", () => {
    expect(z2jh.hub.services['profile-api'].oauth_client_allowed_scopes).toEqual(expect.arrayContaining(['servers!user', 'read:servers!user']));
    expect(z2jh.hub.loadRoles.user.scopes).toEqual(expect.arrayContaining(['servers!user', 'read:servers!user']));
    expect(z2jh.hub.loadRoles['hubside-usage-collector'].scopes).toContain('list:users');
  });

  it('mounts the repository snippets in hub/ that hub.extraConfig imports', () => {
    const files = Object.values(z2jh.hub.extraFiles as Record<string, { mountPath: string }>).map((f) => basename(f.mountPath));
    for (const file of files) expect(existsSync(join(REPO, 'hub', file)), `hub/${file}`).toBe(true);
    const code = z2jh.hub.extraConfig.hubside as string;
    for (const file of files) expect(code).toContain(`from ${file.replace(/\.py$/, '')} import`);
  });
});
