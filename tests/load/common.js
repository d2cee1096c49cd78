// Shared by the Jobfleet k6 scripts: configuration from the environment, the producer journey
// (submit a job, poll it until it finishes), the job metrics and the thresholds.
//
// Environment (every variable is optional):
//   BASE_URL        the API (default http://127.0.0.1:8000)
//   JOBFLEET_KEY    an API key with the producer scope (./scripts/loadtest.sh reads .local/demo-key)
//   DURATION        total length of the profile, e.g. 8s, 5m, 1h30m: the stages are stretched or
//                   shrunk in proportion to fit it
//   SCALE           multiplies the VU target of every stage (0.5 halves them, 2 doubles them)
//   TASK, QUEUE     what to submit (default echo on default); the payload is {vu, iter, sent_at}
//   THINK_TIME      seconds a VU pauses between two jobs (default 0.5)
//   POLL_MIN, POLL_MAX  first and longest pause between two polls of a job, in seconds (0.02, 0.5)
//   POLL_TIMEOUT    seconds to wait for a job to finish before counting it failed (default 30)
//   MAX_POLLS       most polls per job (default 200)
//   HTTP_P95_MS, E2E_P95_MS  override the script's p95 thresholds
//   FAILED_JOBS_RATE  the highest acceptable rate of jobs that did not complete (default 0.01)

import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8000').replace(/\/+$/, '');
export const KEY = __ENV.JOBFLEET_KEY || '';
const TASK = __ENV.TASK || 'echo';
const QUEUE = __ENV.QUEUE || 'default';
const THINK_TIME = number('THINK_TIME', 0.5);
const POLL_MIN = number('POLL_MIN', 0.02);
const POLL_MAX = number('POLL_MAX', 0.5);
const POLL_TIMEOUT = number('POLL_TIMEOUT', 30);
const MAX_POLLS = number('MAX_POLLS', 200);

const STATUSES = ['queued', 'scheduled', 'processing', 'completed', 'failed', 'cancelled'];
const TERMINAL = ['completed', 'failed', 'cancelled'];
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
// ISO 8601 with a UTC offset, as the API writes them: 2026-11-22T08:08:07.360504Z or ...+00:00.
const ISO = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$/;

// Submit to completed, measured by the VU's wall clock (includes the polling granularity).
export const jobE2eLatency = new Trend('job_e2e_latency', true);
// The same span as the server saw it: finished_at - created_at.
export const jobServerLatency = new Trend('job_server_latency', true);
// Time in the queue: started_at - created_at.
export const jobQueueWait = new Trend('job_queue_wait', true);
// 1 for every submitted job that did not end completed (refused, failed, cancelled, timed out).
export const jobsFailed = new Rate('jobs_failed');
export const jobsCompleted = new Counter('jobs_completed');

// Trend summaries include `count`, so the exported summary tells how many jobs were measured.
export const summaryTrendStats = ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)', 'count'];

function number(name, fallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') {
    return fallback;
  }
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0) {
    throw new Error(`${name} must be a non-negative number, not ${JSON.stringify(raw)}`);
  }
  return value;
}

// "90s", "5m", "1h30m", "1500ms" or a bare number of seconds -> seconds.
export function parseDuration(text) {
  const raw = String(text).trim();
  if (/^\d+(\.\d+)?$/.test(raw)) {
    return Number(raw);
  }
  const units = { ms: 0.001, s: 1, m: 60, h: 3600 };
  const part = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let seconds = 0;
  let consumed = 0;
  let match;
  while ((match = part.exec(raw)) !== null) {
    seconds += Number(match[1]) * units[match[2]];
    consumed += match[0].length;
  }
  if (consumed !== raw.length || consumed === 0) {
    throw new Error(`cannot read the duration ${JSON.stringify(raw)} (use e.g. 8s, 5m, 1h30m)`);
  }
  return seconds;
}

// Ramping-VU stages from [{seconds, target}], fitted to DURATION and multiplied by SCALE.
export function stages(base) {
  const total = base.reduce((sum, stage) => sum + stage.seconds, 0);
  const wanted = __ENV.DURATION ? parseDuration(__ENV.DURATION) : total;
  if (!(wanted > 0)) {
    throw new Error('DURATION must be longer than zero');
  }
  const stretch = wanted / total;
  const scale = number('SCALE', 1);
  return base.map((stage) => ({
    duration: `${Math.max(1, Math.round(stage.seconds * stretch * 1000))}ms`,
    target: stage.target === 0 ? 0 : Math.max(1, Math.round(stage.target * scale)),
  }));
}

// The thresholds every profile has; the p95 limits are the profile's (milliseconds).
// abortOnFail stops a run that is failing outright, after `abortDelay` of grace for a cold start.
export function thresholds({ httpP95, e2eP95, abortDelay = '10s' }) {
  const abort = (threshold) => ({ threshold, abortOnFail: true, delayAbortEval: abortDelay });
  return {
    http_req_failed: [abort('rate<0.01')],
    http_req_duration: [`p(95)<${number('HTTP_P95_MS', httpP95)}`],
    checks: [abort('rate>0.99')],
    job_e2e_latency: [`p(95)<${number('E2E_P95_MS', e2eP95)}`],
    jobs_failed: [abort(`rate<${number('FAILED_JOBS_RATE', 0.01)}`)],
  };
}

function headers(extra) {
  return Object.assign({ Authorization: `Bearer ${KEY}`, Accept: 'application/json' }, extra);
}

function json(response) {
  try {
    return response.json();
  } catch (_) {
    return null;
  }
}

// Milliseconds since the epoch from the API's ISO timestamps (fractions past ms are dropped).
function millis(stamp) {
  const match = typeof stamp === 'string' ? ISO.exec(stamp) : null;
  if (!match) {
    return NaN;
  }
  const fraction = (match[2] || '.000').padEnd(4, '0').slice(0, 4);
  return Date.parse(`${match[1]}${fraction}${match[3]}`);
}

function isJob(body) {
  return (
    body !== null &&
    typeof body === 'object' &&
    typeof body.id === 'string' &&
    UUID.test(body.id) &&
    STATUSES.includes(body.status) &&
    body.task === TASK &&
    body.queue === QUEUE &&
    Number.isFinite(millis(body.created_at))
  );
}

function sameEcho(result, payload) {
  return (
    result !== null &&
    typeof result === 'object' &&
    result.vu === payload.vu &&
    result.iter === payload.iter &&
    result.sent_at === payload.sent_at
  );
}

// One producer journey: submit a job with a fresh Idempotency-Key, poll it until it finishes,
// record its latency and outcome, then pause THINK_TIME.
export function submitAndWait() {
  const idempotencyKey = `k6-${__VU}-${__ITER}-${Date.now()}`;
  const payload = { vu: __VU, iter: __ITER, sent_at: Date.now() };
  const sent = Date.now();
  const submitted = http.post(
    `${BASE_URL}/jobs`,
    JSON.stringify({ task: TASK, queue: QUEUE, payload }),
    {
      headers: headers({ 'Content-Type': 'application/json', 'Idempotency-Key': idempotencyKey }),
      tags: { name: 'POST /jobs' },
    },
  );
  const job = json(submitted);
  const accepted = check(submitted, {
    'submit: status 201': (r) => r.status === 201,
    'submit: a job with our key': () => isJob(job) && job.idempotency_key === idempotencyKey,
  });
  if (!accepted) {
    jobsFailed.add(1);
    sleep(THINK_TIME);
    return;
  }

  let last = job;
  let pause = POLL_MIN;
  for (let polls = 0; polls < MAX_POLLS && !TERMINAL.includes(last.status); polls++) {
    if ((Date.now() - sent) / 1000 > POLL_TIMEOUT) {
      break;
    }
    sleep(pause);
    pause = Math.min(POLL_MAX, pause * 1.5);
    const polled = http.get(`${BASE_URL}/jobs/${job.id}`, {
      headers: headers(),
      tags: { name: 'GET /jobs/{id}' },
    });
    const body = json(polled);
    const ok = check(polled, {
      'get: status 200': (r) => r.status === 200,
      'get: the same job, with history': () =>
        isJob(body) && body.id === job.id && Array.isArray(body.history),
    });
    if (!ok) {
      break;
    }
    last = body;
  }
  const finished = Date.now();

  const created = millis(last.created_at);
  const started = millis(last.started_at);
  const ended = millis(last.finished_at);
  const completed = check(last, {
    'job: completed': (j) => j.status === 'completed',
    'job: created <= started <= finished': () => created <= started && started <= ended,
    'job: result is the payload': (j) => TASK !== 'echo' || sameEcho(j.result, payload),
  });
  jobsFailed.add(!completed);
  if (last.status === 'completed') {
    jobsCompleted.add(1);
    jobE2eLatency.add(finished - sent);
    if (Number.isFinite(ended - created)) {
      jobServerLatency.add(ended - created);
      jobQueueWait.add(started - created);
    }
  }
  sleep(THINK_TIME);
}

// Fail fast, before any VU starts, when the API is not there or the key is missing.
export function setup() {
  if (!KEY) {
    throw new Error('JOBFLEET_KEY is not set: export the demo key printed by ./scripts/dev.sh');
  }
  const health = http.get(`${BASE_URL}/health`, { tags: { name: 'GET /health' } });
  if (health.status !== 200) {
    throw new Error(`${BASE_URL}/health answered ${health.status}: is the API running?`);
  }
}
