-- GET of one firmware image with a device key, keep-alive: throughput of large bodies.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")
local devices = common.devices()
local path = os.getenv("BENCH_PATH")
local counter = 0

setup = common.setup
done = common.done

function request()
  counter = counter + 1
  local d = devices[(counter + (thread_no or 0) * 131) % #devices + 1]
  return wrk.format("GET", path, { ["Host"] = "localhost", ["X-API-Key"] = d[2], ["X-Device-Id"] = d[1] })
end
