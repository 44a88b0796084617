/** Fuzzing of every profile-api route through inject: see fuzz-routes.ts for the generators and the oracle. */
import { fuzzService } from './fuzz-routes.js';

fuzzService('profile-api');
