import type { MigrationSet } from '@hubside/service-kit';
import * as profileVersions from './2026-11-21T23-00-00_profile-versions.js';

/** Timestamped migrations, applied in name order. */
export const migrations: MigrationSet = {
  '2026-11-21T23-00-00_profile-versions': profileVersions,
};
