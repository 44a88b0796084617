import { exitOnConfigError, runService, startTracing } from '@hubside/service-kit';

// Tracing first, so the HTTP stack is instrumented when the service module loads it.
const tracing = await startTracing('data-gateway');
const { service } = await import('./app.js');
try {
  const running = await runService(service, { onClose: async () => tracing?.shutdown() });
  running.app.log.info({ url: running.url }, 'data-gateway listening');
} catch (err) {
  exitOnConfigError(err);
}
