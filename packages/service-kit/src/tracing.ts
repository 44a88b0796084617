import { redactUrl } from './logging.js';

/**
 * OpenTelemetry from the standard OTEL_* environment. Nothing is loaded unless tracing is
 * asked for, so a laptop start pays nothing for it.
 */
export interface Tracing {
  shutdown(): Promise<void>;
}

export function tracingRequested(env: NodeJS.ProcessEnv): boolean {
  if (env.OTEL_SDK_DISABLED === 'true') return false;
  if (env.OTEL_TRACES_EXPORTER === 'none') return false;
  return Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_TRACES_EXPORTER);
}

/**
 * Start the SDK before the HTTP server module is loaded, so its instrumentation can patch it.
 * Exporter, sampler, resource and propagators all come from OTEL_* variables (read by the SDK).
 */
export async function startTracing(serviceName: string, env: NodeJS.ProcessEnv = process.env): Promise<Tracing | null> {
  if (!tracingRequested(env)) return null;
  const [{ NodeSDK }, { HttpInstrumentation }, { UndiciInstrumentation }] = await Promise.all([
    import('@opentelemetry/sdk-node'),
    import('@opentelemetry/instrumentation-http'),
    import('@opentelemetry/instrumentation-undici'),
  ]);
  const sdk = new NodeSDK({
    serviceName: env.OTEL_SERVICE_NAME ?? `hubside-${serviceName}`,
    instrumentations: [
      new HttpInstrumentation({
        // Health and metrics scrapes would drown the traces that matter.
        ignoreIncomingRequestHook: (req) => /\/(health|metrics)$/.test((req.url ?? '').split('?')[0] ?? ''),
        // A token in a query string must not reach the trace backend either.
        requestHook: (span, req) => {
          if (!('headers' in req) || typeof (req as { url?: unknown }).url !== 'string') return;
          const url = (req as { url: string }).url;
          const host = req.headers.host ?? 'localhost';
          span.setAttribute('http.target', redactUrl(url));
          span.setAttribute('http.url', redactUrl(`http://${host}${url}`));
        },
      }),
      new UndiciInstrumentation(),
    ],
  });
  sdk.start();
  return { shutdown: () => sdk.shutdown() };
}
