import { exitOnConfigError, runService, startTracing } from '@hubside/service-kit';

// Tracing first, so the HTTP stack is instrumented when the service module loads it.
const tracing = await startTracing('usage-collector');
const { service } = await import('./app.js');
try {
  const running = await runService(service);
  running.app.addHook('onClose', async () => {
    await tracing?.shutdown();
  });
  running.app.log.info({ url: running.url }, 'usage-collector listening');
} catch (err) {
  exitOnConfigError(err);
}
