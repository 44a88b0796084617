/** Shapes of the JupyterHub REST API (3.x and later) that Hubside reads. */

export interface HubServer {
  name: string;
  ready: boolean;
  pending: 'spawn' | 'stop' | null | string;
  stopped?: boolean;
  url: string;
  progress_url?: string;
  started: string | null;
  last_activity: string | null;
  user_options?: Record<string, unknown> | null;
  state?: unknown;
}

export interface HubUser {
  kind: 'user';
  name: string;
  admin: boolean;
  groups: string[];
  roles?: string[];
  server: string | null;
  pending: string | null;
  created?: string;
  last_activity: string | null;
  servers?: Record<string, HubServer>;
  /** Present on `GET /user`: the expanded scopes of the token that asked. */
  scopes?: string[];
  session_id?: string | null;
  auth_state?: unknown;
}

export interface HubService {
  kind: 'service';
  name: string;
  admin?: boolean;
  roles?: string[];
  scopes?: string[];
}

export interface HubGroup {
  kind: 'group';
  name: string;
  users: string[];
  roles?: string[];
  properties?: Record<string, unknown>;
}

/** What `GET /user` answers for a token: a user or a service. */
export type HubTokenOwner = HubUser | HubService;

/** The identity a Hubside route sees for its caller. */
export interface HubIdentity {
  kind: 'user' | 'service';
  name: string;
  admin: boolean;
  groups: string[];
  scopes: string[];
  /** The full model the hub returned (servers, roles, ...), as far as the token may read it. */
  model: HubTokenOwner;
}

export function toIdentity(model: HubTokenOwner): HubIdentity {
  return {
    kind: model.kind,
    name: model.name,
    admin: model.admin ?? false,
    groups: model.kind === 'user' ? [...(model.groups ?? [])] : [],
    scopes: [...(model.scopes ?? [])],
    model,
  };
}

export interface HubToken {
  id: string;
  token?: string;
  note?: string;
  scopes?: string[];
  expires_at?: string | null;
}

export interface Paginated<T> {
  items: T[];
  _pagination: {
    offset: number;
    limit: number;
    total: number;
    next: { offset: number; limit: number; url: string } | null;
  };
}
