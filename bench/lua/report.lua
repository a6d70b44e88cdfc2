-- POST /firmware/report: progress reports from many devices, each with a unique report_id.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")
local devices = common.devices()
local prefix = os.getenv("BENCH_REPORT_PREFIX") or "r"
local counter = 0

setup = common.setup
done = common.done

function request()
  counter = counter + 1
  local t = thread_no or 0
  local d = devices[(counter * 5 + t * 104729) % #devices + 1]
  local body = string.format(
    '{"device_id":"%s","status":"downloading","version":"v1.0.0","target_version":"v1.4.1","bytes":%d,"total":124416,"report_id":"%s%s"}',
    d[1], (counter % 16) * 8192, prefix, common.unique(t, counter))
  return wrk.format("POST", "/firmware/report",
    { ["Host"] = "localhost", ["X-API-Key"] = d[2], ["X-Device-Id"] = d[1], ["Content-Type"] = "application/json" }, body)
end
