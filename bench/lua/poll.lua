-- GET /firmware/manifest as provisioned devices do: each request from the next device of the table, with
-- its own key and a fresh nonce. BENCH_CLOSE=1 asks for a new connection (a full TLS handshake) each time.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")
local devices = common.devices()
local close = os.getenv("BENCH_CLOSE") == "1"
local host = os.getenv("BENCH_HOST") or "localhost"
local counter = 0

setup = common.setup
done = common.done

function request()
  counter = counter + 1
  local t = thread_no or 0
  local d = devices[(counter * 7 + t * 7919) % #devices + 1]
  local headers = {
    ["Host"] = host,
    ["X-API-Key"] = d[2],
    ["X-Device-Id"] = d[1],
    ["X-Nonce"] = common.unique(t, counter),
    ["X-Device-Chip"] = "esp32",
    ["X-Device-Version"] = "v1.0.0",
  }
  if close then headers["Connection"] = "close" end
  return wrk.format("GET", "/firmware/manifest", headers)
end
