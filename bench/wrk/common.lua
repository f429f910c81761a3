-- Shared by post.lua and get.lua. Arguments after `--`:
--   <threads in the dataset> <api key> <result file>
-- Each wrk thread has its own Lua state; done() runs once, in the main one.
local M = {}

function M.setup_counter()
  local counter = 0
  return function(thread)
    counter = counter + 1
    thread:set("id", counter)
  end
end

function M.init(args)
  nthreads = tonumber(args[1]) or 1
  api_key = args[2] or "sk_bench"
  math.randomseed(1000 + (id or 0))
  -- the same text pgbench's scripts send: 100-2000 characters
  lorem = string.rep("lorem ipsum dolor sit amet consectetur ", 52)
end

function M.done(summary, latency, requests)
  local out = assert(io.open(os.getenv("WRK_RESULT") or "wrk-result.json", "w"))
  local e = summary.errors
  out:write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
  out:close()
end

return M
