// Smoke: one or two VUs for about 15 s. Does the journey work at all, and fast, on a quiet API?
//   ./scripts/loadtest.sh smoke                 (DURATION=6s for a quicker look)
import { stages, submitAndWait, summaryTrendStats, thresholds } from './common.js';

export { setup } from './common.js';

export const options = {
  stages: stages([
    { seconds: 2, target: 2 },
    { seconds: 10, target: 2 },
    { seconds: 3, target: 0 },
  ]),
  thresholds: thresholds({ httpP95: 500, e2eP95: 2000, abortDelay: '5s' }),
  summaryTrendStats,
};

export default function () {
  submitAndWait();
}
