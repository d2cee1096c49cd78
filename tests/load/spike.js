// Spike: a quiet baseline, then a sudden jump to 12x the VUs, held for a minute, and a drop
// back: about 3 minutes. Does the API keep answering through the burst, and does the backlog
// drain afterwards? The limits are looser than load.js: queueing during the burst is expected,
// errors are not.
//   ./scripts/loadtest.sh spike                 (SCALE=0.5 on a small machine)
import { stages, submitAndWait, summaryTrendStats, thresholds } from './common.js';

export { setup } from './common.js';

export const options = {
  stages: stages([
    { seconds: 20, target: 5 },
    { seconds: 20, target: 5 },
    { seconds: 5, target: 60 },
    { seconds: 60, target: 60 },
    { seconds: 5, target: 5 },
    { seconds: 50, target: 5 },
    { seconds: 10, target: 0 },
  ]),
  thresholds: thresholds({ httpP95: 1000, e2eP95: 5000, abortDelay: '45s' }),
  summaryTrendStats,
};

export default function () {
  submitAndWait();
}
