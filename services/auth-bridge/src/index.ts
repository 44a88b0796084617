export { buildApp, configSchema, default, references, service } from './app.js';
export { migrations } from './migrations/index.js';
