import type { MigrationSet } from '@hubside/service-kit';
import * as init from './2026-11-21T23-00-00_init.js';
import * as measured from './2026-11-21T23-40-00_measured.js';
import * as rollupPricing from './2026-11-22T00-30-00_rollup-pricing.js';
import * as dashboardShares from './2026-11-22T01-00-00_dashboard-shares.js';
import * as sessionPieces from './2026-11-22T03-30-00_session-pieces.js';
import * as settingsVersions from './2026-11-22T04-00-00_settings-versions.js';

/** Timestamped migrations, applied in name order. */
export const migrations: MigrationSet = {
  '2026-11-21T23-00-00_init': init,
  '2026-11-21T23-40-00_measured': measured,
  '2026-11-22T00-30-00_rollup-pricing': rollupPricing,
  '2026-11-22T01-00-00_dashboard-shares': dashboardShares,
  '2026-11-22T03-30-00_session-pieces': sessionPieces,
  '2026-11-22T04-00-00_settings-versions': settingsVersions,
};
