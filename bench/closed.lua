-- wrk script for the closed-loop runs of bench/proxy.sh: every connection sends the next request
-- as soon as the previous answer arrived. The request comes from the environment:
--   BENCH_METHOD, BENCH_PATH, BENCH_BODY (may be empty), BENCH_HEADERS ("Name: value" lines).
-- done() prints one machine-readable line: RESULT rps=.. p50_us=.. p99_us=.. requests=.. non2xx=.. errors=..

local function headers_from_env()
  local h = {}
  for line in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^\n]+") do
    local name, value = string.match(line, "^([^:]+):%s*(.*)$")
    if name then h[name] = value end
  end
  return h
end

local method = os.getenv("BENCH_METHOD") or "GET"
local path = os.getenv("BENCH_PATH") or "/"
local body = os.getenv("BENCH_BODY")
if body == "" then body = nil end
-- Built in init(): wrk sets the Host header only after the script is loaded.
local req

function init(args)
  req = wrk.format(method, path, headers_from_env(), body)
end

function request()
  return req
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT rps=%.1f p50_us=%d p99_us=%d requests=%d non2xx=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    summary.requests, e.status, e.connect + e.read + e.write + e.timeout))
end
