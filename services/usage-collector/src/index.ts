export { buildApp, configSchema, default, references, service } from './app.js';
export { LIMITS, resolveConfig } from './config.js';
export { migrations } from './migrations/index.js';
