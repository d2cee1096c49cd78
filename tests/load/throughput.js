// Throughput: jobs submitted at a steady RATE per second (open loop: a slow reply does not delay
// the next submit) for DURATION, from many producers, each with its own API key. No polling: the
// fleet's completions are read from Postgres by `python -m app bench --only defaults`, which
// runs this profile against a stack with the settings the README and the compose file use.
//   ./scripts/loadtest.sh throughput            (RATE=300 DURATION=20s; JOBFLEET_KEYS=k1,k2,...)
//
// Environment, beside BASE_URL and JOBFLEET_KEY (see common.js):
//   RATE            submits per second (default 100)
//   DURATION        how long to keep that rate (default 20s)
//   JOBFLEET_KEYS   comma-separated producer keys; iteration n uses key n mod their count. Rate
//                   limits count per key (RATE_LIMIT_SUBMIT, 100/s each by default), so a rate
//                   above that needs as many keys as producers would have.
//   TASK, QUEUE     what to submit (default noop on default)
//   HTTP_P95_MS     the request p95 threshold (default 50)
import http from 'k6/http';
import { check, fail } from 'k6';
import exec from 'k6/execution';
import { BASE_URL, KEY, parseDuration, summaryTrendStats } from './common.js';

const RATE = positive('RATE', 100);
const DURATION = __ENV.DURATION || '20s';
const KEYS = (__ENV.JOBFLEET_KEYS || KEY)
  .split(',')
  .map((key) => key.trim())
  .filter((key) => key !== '');
const TASK = __ENV.TASK || 'noop';
const QUEUE = __ENV.QUEUE || 'default';
// Enough VUs that a reply of 100 ms at the full rate still finds one free.
const VUS = Math.max(10, Math.ceil(RATE / 10));

function positive(name, fallback) {
  const value = __ENV[name] === undefined || __ENV[name] === '' ? fallback : Number(__ENV[name]);
  if (!Number.isFinite(value) || value <= 0) {
    throw new Error(`${name} must be a positive number, not ${JSON.stringify(__ENV[name])}`);
  }
  return value;
}

export const options = {
  scenarios: {
    submit: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: `${parseDuration(DURATION)}s`,
      preAllocatedVUs: VUS,
      maxVUs: VUS * 4,
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    http_req_duration: [`p(95)<${Number(__ENV.HTTP_P95_MS || 50)}`],
    checks: ['rate>0.99'],
    // Submits k6 could not start on time because every VU was waiting for a reply.
    dropped_iterations: [`count<${Math.ceil(RATE * parseDuration(DURATION) * 0.01)}`],
  },
  summaryTrendStats,
  // The connections are reused, as a producer's client reuses them.
  noConnectionReuse: false,
};

export function setup() {
  if (KEYS.length === 0) {
    fail('set JOBFLEET_KEYS (comma-separated) or JOBFLEET_KEY');
  }
  const health = http.get(`${BASE_URL}/health`, { tags: { name: 'GET /health' } });
  if (health.status !== 200) {
    fail(`${BASE_URL}/health answered ${health.status}: is the API running?`);
  }
}

export default function () {
  const n = exec.scenario.iterationInTest;
  const submitted = http.post(`${BASE_URL}/jobs`, JSON.stringify({ task: TASK, queue: QUEUE }), {
    headers: {
      Authorization: `Bearer ${KEYS[n % KEYS.length]}`,
      'Content-Type': 'application/json',
      // As the Python client does: every submit carries a key, so a retry cannot make two jobs.
      'Idempotency-Key': `k6-throughput-${exec.vu.idInTest}-${n}-${Date.now()}`,
    },
    tags: { name: 'POST /jobs' },
  });
  check(submitted, { 'submit: status 201': (r) => r.status === 201 });
}
