export interface DemoIdp {
  issuer: string;
  close(): Promise<void>;
}
export declare function startDemoIdp(opts: {
  port: number;
  people: Array<{ name: string; role: string; groups: string[] }>;
  clientId: string;
  clientSecret: string;
  redirectUris: string[];
}): Promise<DemoIdp>;
