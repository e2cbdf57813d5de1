-- wrk script for the fixed-rate runs of bench/proxy.sh (wrk2 is not in Debian). Run it with as
-- many threads as connections (`-t N -c N`), so that each Lua state drives exactly one connection.
-- Each connection sends on a fixed schedule (BENCH_RATE requests/s in total, spread over the
-- connections); latency is measured from the *scheduled* send time, not from the actual one, so a
-- slow answer that delays the next request is counted against the server (no coordinated
-- omission). The request comes from the same environment variables as closed.lua.
-- done() prints: PACED rate=.. achieved=.. p50_us=.. p99_us=.. p999_us=.. max_us=.. requests=.. non2xx=..
-- With BENCH_SLOW_US=N it first prints one line per answer slower than N microseconds:
-- SLOW at_ms=.. latency_ms=.. (at_ms: scheduled send time since the first send of the run), to
-- see whether slow answers come alone or together, and when.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end

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

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

-- Per connection (= per thread) state.
lat = {}
slow = {}
bad = 0
local slow_us = tonumber(os.getenv("BENCH_SLOW_US") or "0")
local interval_us, next_t, sent_at

function init(args)
  local rate = tonumber(os.getenv("BENCH_RATE") or "1000")
  local conns = tonumber(os.getenv("BENCH_CONNS") or "1")
  interval_us = 1e6 * conns / rate
  req = wrk.format(method, path, headers_from_env(), body)
end

function delay()
  local now = now_us()
  if next_t == nil then
    -- Spread the connections' first sends over one interval.
    math.randomseed(math.floor(now) % 2147483647)
    next_t = now + math.random() * interval_us
  end
  local d = math.floor((next_t - now) / 1000)
  if d < 0 then d = 0 end
  return d
end

function request()
  if next_t == nil then
    -- wrk sends the first request without asking delay(): it starts the schedule.
    next_t = now_us()
  end
  -- Latency counts from the earlier of the scheduled and the actual send time: a send delayed by
  -- a slow previous answer is counted against the server (no coordinated omission), and a timer
  -- that fired early (wrk's delay has millisecond granularity) does not shorten the latency.
  sent_at = math.min(now_us(), next_t)
  next_t = next_t + interval_us
  return req
end

function response(status, headers, body)
  local l = now_us() - sent_at
  lat[#lat + 1] = l
  if slow_us > 0 and l > slow_us then
    slow[#slow + 1] = string.format("%.0f %.1f", sent_at / 1000, l / 1000)
  end
  if status >= 300 then bad = bad + 1 end
end

function done(summary, latency, requests)
  local all, nbad = {}, 0
  for _, t in ipairs(threads) do
    for _, v in ipairs(t:get("lat")) do all[#all + 1] = v end
    nbad = nbad + t:get("bad")
  end
  table.sort(all)
  local slows = {}
  for _, t in ipairs(threads) do
    for _, v in ipairs(t:get("slow")) do slows[#slows + 1] = v end
  end
  if #slows > 0 then
    local first
    table.sort(slows, function(a, b) return tonumber(a:match("^%S+")) < tonumber(b:match("^%S+")) end)
    for _, v in ipairs(slows) do
      local at, l = v:match("^(%S+) (%S+)$")
      first = first or tonumber(at)
      io.write(string.format("SLOW at_ms=%.0f latency_ms=%s\n", tonumber(at) - first, l))
    end
  end
  local function pct(p)
    if #all == 0 then return 0 end
    local i = math.ceil(#all * p / 100)
    if i < 1 then i = 1 end
    return all[i]
  end
  io.write(string.format(
    "PACED rate=%s achieved=%.1f p50_us=%d p99_us=%d p999_us=%d max_us=%d requests=%d non2xx=%d\n",
    os.getenv("BENCH_RATE") or "?", #all / (summary.duration / 1e6),
    pct(50), pct(99), pct(99.9), pct(100), #all, nbad))
end
