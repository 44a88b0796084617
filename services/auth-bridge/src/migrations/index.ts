import type { MigrationSet } from '@hubside/service-kit';

/** Timestamped migrations, applied in name order. */
export const migrations: MigrationSet = {};
