// oidc-provider ships no types and @types/oidc-provider is not installed; this covers what we use.
declare module 'oidc-provider' {
  import type { IncomingMessage, ServerResponse } from 'node:http';

  export interface AdapterPayload {
    [key: string]: unknown;
    grantId?: string;
    userCode?: string;
    uid?: string;
    accountId?: string;
    consumed?: unknown;
  }
  export interface Adapter {
    upsert(id: string, payload: AdapterPayload, expiresIn: number): Promise<void>;
    find(id: string): Promise<AdapterPayload | undefined>;
    findByUserCode(userCode: string): Promise<AdapterPayload | undefined>;
    findByUid(uid: string): Promise<AdapterPayload | undefined>;
    consume(id: string): Promise<void>;
    destroy(id: string): Promise<void>;
    revokeByGrantId(grantId: string): Promise<void>;
  }
  export interface KoaContextLike {
    [key: string]: any;
  }
  export interface InteractionLike {
    uid: string;
    prompt: { name: string; reasons: string[]; details: Record<string, unknown> };
    params: Record<string, unknown>;
    session?: { accountId?: string };
    result?: Record<string, unknown>;
    returnTo: string;
    exp: number;
    save(ttl: number): Promise<string>;
  }
  export default class Provider {
    constructor(issuer: string, configuration: Record<string, unknown>);
    proxy: boolean;
    issuer: string;
    callback(): (req: IncomingMessage, res: ServerResponse) => void;
    use(middleware: (ctx: KoaContextLike, next: () => Promise<void>) => Promise<void> | void): void;
    on(event: string, listener: (...args: any[]) => void): void;
    interactionDetails(req: IncomingMessage, res: ServerResponse): Promise<InteractionLike>;
    interactionFinished(req: IncomingMessage, res: ServerResponse, result: Record<string, unknown>, opts?: Record<string, unknown>): Promise<void>;
    Interaction: { find(uid: string): Promise<InteractionLike | undefined> };
    Grant: any;
    Session: any;
    [key: string]: any;
  }
  export const interactionPolicy: any;
  export const errors: Record<string, new (...args: any[]) => Error>;
}
