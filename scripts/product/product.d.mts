// Types of product.mjs, for test/product and bench/start (TypeScript callers).

export type ServiceName = 'auth-bridge' | 'profile-api' | 'usage-collector' | 'data-gateway';
export declare const SERVICES: readonly ServiceName[];
export declare const REPO_ROOT: string;
export declare const INSTALL_OAUTHENTICATOR: string;

export interface ProductPorts {
  public: number;
  proxyApi: number;
  hub: number;
  /** The demo identity provider (login through auth-bridge only). */
  idp?: number;
  services: Record<ServiceName, number>;
}
export declare const DEFAULT_PORTS: ProductPorts;

export interface DemoPerson {
  name: string;
  role: string;
  groups: string[];
  views: string;
  hubAdmin?: boolean;
}

export interface DemoCommunity {
  name: string;
  course: string;
  instructorsGroup: string;
  instructor: string;
  adminGroup: string;
  currency: string;
  profiles: Array<{ slug: string; display_name?: string; price_per_hour?: number | string; allowed_groups?: string[]; [key: string]: unknown }>;
  people: DemoPerson[];
  groups: Record<string, string[]>;
  /** The community file names the admin group (or grace) in `community.admins`. */
  communityAdmins: boolean;
  /** `profile-api.adminGroups` (the older per-service field). */
  profileAdminGroups: string[];
}

export interface StartProductOptions {
  root?: string;
  /** Hub database, service databases, logs, secrets. Default `.hubside/product`. */
  stateDir?: string;
  /** Default examples/community.yaml. */
  communityFile?: string;
  /** Fixed ports (default DEFAULT_PORTS), or 'free' to pick free ones. */
  ports?: ProductPorts | 'free';
  /** 'fallback': the dummy login restricted to the demo people; 'oidc': GenericOAuthenticator. */
  login?: 'fallback' | 'oidc';
  jupyterhub?: string;
  singleuser?: string;
  node?: string;
  /** usage-collector's poll interval; default 10. */
  pollSeconds?: number;
  logLevel?: string;
  databaseUrl?: string;
  /** false: no sample usage. */
  seed?: boolean;
  now?: Date;
  /** Epoch ms the launch began (timings count from it); default now. */
  launchedAt?: number;
  /** Default 180 000. */
  timeoutMs?: number;
}

export interface RunningProduct {
  url: string;
  hubApiUrl: string;
  login: 'fallback' | 'oidc';
  stateDir: string;
  logDir: string;
  demo: DemoCommunity;
  ports: ProductPorts;
  serviceTokens: Record<ServiceName, string>;
  /** Each service's own address and prefix (not through the proxy). */
  serviceUrls: Record<ServiceName, string>;
  seededSessions: number;
  timings: { hubMs: number; servicesMs: Record<ServiceName, number>; readyMs: number };
  /** A message when the hub or a service exited on its own, else undefined. */
  exited(): string | undefined;
  stop(): Promise<void>;
}

export declare function startProduct(opts?: StartProductOptions): Promise<RunningProduct>;
export declare function findJupyterhub(env?: NodeJS.ProcessEnv): string | null;
export declare function hubPython(jupyterhub: string): string;
export declare function oauthenticatorAvailable(python: string): boolean;
export declare function demoCommunity(doc: unknown): DemoCommunity;
export declare function demoUsagePlan(
  demo: DemoCommunity,
  now?: Date,
): Array<{ user: string; groups: string[]; profile: DemoCommunity['profiles'][number]; sessions: Array<{ startMs: number; hours: number; server?: string }> }>;
export declare function productRoles(): Array<{ name: string; scopes: string[]; services?: string[]; description?: string }>;
export declare function freePort(): Promise<number>;
export declare function oidcBridgeSection(
  base: Record<string, unknown> | undefined,
  opts: { hubUrl: string; idpUrl: string; idpClientSecret: string; hubClientSecret: string; communityName: string },
): Record<string, unknown>;
