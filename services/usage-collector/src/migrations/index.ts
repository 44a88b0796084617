import type { MigrationSet } from '@hubside/service-kit';
import * as init from './2026-11-21T23-00-00_init.js';
import * as measured from './2026-11-21T23-40-00_measured.js';

/** Timestamped migrations, applied in name order. */
export const migrations: MigrationSet = {
  '2026-11-21T23-00-00_init': init,
  '2026-11-21T23-40-00_measured': measured,
};
