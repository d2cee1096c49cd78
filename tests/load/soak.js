// Soak: moderate, steady traffic for about 30 minutes (15 VUs). Looks for what only time shows:
// latency creeping up as the jobs table grows, leaked connections, workers that stop, memory.
//   ./scripts/loadtest.sh soak                  (DURATION=2h for a longer one)
import { stages, submitAndWait, summaryTrendStats, thresholds } from './common.js';

export { setup } from './common.js';

export const options = {
  stages: stages([
    { seconds: 60, target: 15 },
    { seconds: 1680, target: 15 },
    { seconds: 60, target: 0 },
  ]),
  thresholds: thresholds({ httpP95: 500, e2eP95: 2000, abortDelay: '60s' }),
  summaryTrendStats,
};

export default function () {
  submitAndWait();
}
