export { buildApp, configSchema, default, provides, references, service } from './app.js';
export { migrations } from './migrations/index.js';
