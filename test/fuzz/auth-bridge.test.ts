/** Fuzzing of every auth-bridge route through inject: see fuzz-routes.ts for the generators and the oracle. */
import { fuzzService } from './fuzz-routes.js';

fuzzService('auth-bridge');
