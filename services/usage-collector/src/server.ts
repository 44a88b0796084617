import { exitOnConfigError, runService, startTracing } from '@hubside/service-kit';

// Tracing first, so the HTTP stack is instrumented when the service module loads it.
const tracing = await startTracing('usage-collector');
const { service } = await import('./app.js');
try {
  const running = await runService(service, { onClose: async () => tracing?.shutdown() });
  running.app.log.info({ url: running.url }, 'usage-collector listening');
} catch (err) {
  exitOnConfigError(err);
}
