/** Fuzzing of every usage-collector route through inject: see fuzz-routes.ts for the generators and the oracle. */
import { fuzzService } from './fuzz-routes.js';

fuzzService('usage-collector');
