export { buildApp, configSchema, default, service } from './app.js';
export { migrations } from './migrations/index.js';
