-- Shared by the bench's wrk scripts: the device table, per-thread numbering, a JSON summary at the end.
local M = {}

-- setup() runs in wrk's main state once per thread: give each thread its number.
local next_thread = 0
function M.setup(thread)
  thread:set("thread_no", next_thread)
  next_thread = next_thread + 1
end

function M.devices()
  local file = os.getenv("BENCH_DEVICES")
  if not file then error("BENCH_DEVICES is not set") end
  return dofile(file)
end

-- Nonces and report ids unique across runs, threads and requests: <run>t<thread>n<counter>.
local run = os.getenv("BENCH_RUN") or "r"
function M.unique(thread, counter)
  return string.format("%st%02dn%012d", run, thread, counter)
end

function M.done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p99":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end

return M
