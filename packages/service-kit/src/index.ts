export { createServiceApp, whoamiSchema } from './app.js';
export type { CreateServiceAppOptions, RegisteredRoute, ServiceKit } from './app.js';
export {
  ConfigError,
  SERVICE_NAMES,
  communityFileSchema,
  describeIssues,
  envSchema,
  loadCommunity,
  loadSection,
  parseOrThrow,
  readYamlFile,
  resolveSettings,
  schemaFor,
  withoutPrototypes,
} from './config.js';
export type { ServiceEnv, ServiceName, ServiceSettings, SettingsDefaults } from './config.js';
export { createError, errorBody, installErrorHandlers, isDatabaseUnavailable } from './errors.js';
export type { ErrorBody } from './errors.js';
export { REDACT_PATHS, loggerOptions, redactUrl } from './logging.js';
export { createMetrics } from './metrics.js';
export type { KitMetrics } from './metrics.js';
export { DEFAULT_PROTECTION, registerProtection } from './protection.js';
export type { ProtectionSettings } from './protection.js';
export { exitOnConfigError, loadService, runService } from './service.js';
export type { BuildOptions, RunOptions, RunningService, ServiceDefinition } from './service.js';
export { startTracing, tracingRequested } from './tracing.js';
export type { Tracing } from './tracing.js';
export * from './database/index.js';
export {
  DEFAULT_COMMUNITY,
  LONE_SURROGATE,
  communitySchema,
  coursesTaughtBy,
  currencyCode,
  fieldKey,
  hubName,
  isCommunityAdmin,
  namedRecord,
} from './community.js';
export type { Community, CommunityProvides, CommunityReference } from './community.js';
