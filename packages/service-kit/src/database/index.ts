export { assertValidSchemaName, createDatabase, redactSecrets } from './database.js';
export type { CreateDatabaseOptions, Database, DatabaseLogger } from './database.js';
export { migrate } from './migrate.js';
export type { MigrateOptions, MigrateResult, Migration, MigrationSet } from './migrate.js';
export { databaseHealth, databasePlugin } from './plugin.js';
export type { DatabaseHealth, DatabasePluginOptions } from './plugin.js';
export { PGLITE_TEMPLATE_DIR, pgliteTemplate, seedFromTemplate } from './pglite-template.js';
