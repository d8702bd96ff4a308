'use strict';
// GET /metrics with Kyma's metric names, types and units, in the text Kyma's OpenTelemetry Prometheus
// exporter writes (checked against Kyma's running server): target_info, then function_calls_total
// (counter), function_failures_total (counter; as OpenTelemetry, absent until the first failure) and
// function_duration_miliseconds (Kyma's spelling; a histogram in ms with OpenTelemetry's default
// buckets), labelled otel_scope_name="<FUNC_NAME>" as Kyma's meters are. Counting here is three
// additions per call, not the SDK's machinery (and its load time).

const BOUNDS = [0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000];
const buckets = new Array(BOUNDS.length + 1).fill(0); // per bucket, +Inf last
let calls = 0;
let failures = 0;
let durationCount = 0;
let durationSum = 0;

const called = () => { calls++; };
const failed = () => { failures++; };

function observe(ms) {
  durationCount++;
  durationSum += ms;
  let i = 0;
  while (i < BOUNDS.length && ms > BOUNDS[i]) i++;
  buckets[i]++;
}

const escapeLabel = (v) => String(v).replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');

let targetInfo = null;
function target() { // the resource as OpenTelemetry's default resource gives it (it overrides Kyma's service.name)
  if (targetInfo === null) {
    let version = '';
    try { version = require('@opentelemetry/core/package.json').version; } catch { /* not installed */ }
    targetInfo = '# HELP target_info Target metadata\n# TYPE target_info gauge\n'
      + `target_info{service_name="${escapeLabel(`unknown_service:${process.argv0}`)}",telemetry_sdk_language="nodejs",`
      + `telemetry_sdk_name="opentelemetry",telemetry_sdk_version="${escapeLabel(version)}"} 1\n`;
  }
  return targetInfo;
}

function render(functionName) {
  const scope = `otel_scope_name="${escapeLabel(functionName || '')}"`;
  let out = target();
  if (calls > 0) {
    out += '# HELP function_calls_total Number of calls to user function\n# TYPE function_calls_total counter\n'
      + `function_calls_total{${scope}} ${calls}\n`;
  }
  if (failures > 0) {
    out += '# HELP function_failures_total Number of exceptions in user function\n# TYPE function_failures_total counter\n'
      + `function_failures_total{${scope}} ${failures}\n`;
  }
  if (durationCount > 0) {
    out += '# HELP function_duration_miliseconds Duration of user function in miliseconds\n'
      + '# TYPE function_duration_miliseconds histogram\n'
      + `function_duration_miliseconds_count{${scope}} ${durationCount}\n`
      + `function_duration_miliseconds_sum{${scope}} ${durationSum}\n`;
    let cumulative = 0;
    for (let i = 0; i <= BOUNDS.length; i++) {
      cumulative += buckets[i];
      const le = i < BOUNDS.length ? String(BOUNDS[i]) : '+Inf';
      out += `function_duration_miliseconds_bucket{${scope},le="${le}"} ${cumulative}\n`;
    }
  }
  if (calls === 0 && failures === 0 && durationCount === 0) out += '# no registered metrics'; // as OpenTelemetry's exporter
  return out;
}

module.exports = { called, failed, observe, render };
