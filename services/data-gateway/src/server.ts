import { startTracing } from '@hubside/service-kit/tracing';

// Tracing first, so the HTTP stack is instrumented when the service module loads it.
const tracing = await startTracing('data-gateway');
const { exitOnConfigError, runService } = await import('@hubside/service-kit');
const { service } = await import('./app.js');
try {
  const running = await runService(service, { onClose: async () => tracing?.shutdown() });
  running.app.log.info({ url: running.url }, 'data-gateway listening');
} catch (err) {
  exitOnConfigError(err);
}
