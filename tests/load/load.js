// Load: the steady traffic a small deployment should carry. Ramp to 10 VUs, hold, ramp to 20,
// hold, ramp down: about 5 minutes. Each VU submits a job, polls it to completion, pauses 0.5 s.
//   ./scripts/loadtest.sh load                  (SCALE=2 for twice the VUs, DURATION=10m)
import { stages, submitAndWait, summaryTrendStats, thresholds } from './common.js';

export { setup } from './common.js';

export const options = {
  stages: stages([
    { seconds: 30, target: 10 },
    { seconds: 90, target: 10 },
    { seconds: 30, target: 20 },
    { seconds: 120, target: 20 },
    { seconds: 30, target: 0 },
  ]),
  thresholds: thresholds({ httpP95: 500, e2eP95: 2000, abortDelay: '30s' }),
  summaryTrendStats,
};

export default function () {
  submitAndWait();
}
