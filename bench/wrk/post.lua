-- POST /v1/messages into a uniformly random thread t<i>, as its owner
-- user<i % 1000> (backend key + author: the gateway checks ownership).
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
local common = require("common")

setup = common.setup_counter()

function init(args)
  common.init(args)
  headers = {
    ["Authorization"] = "Bearer " .. api_key,
    ["Content-Type"] = "application/json",
  }
end

function request()
  local i = math.random(1, nthreads)
  local body = '{"thread":"t' .. i .. '","author":"user' .. (i % 1000) ..
               '","body":{"text":"' .. lorem:sub(1, math.random(100, 2000)) .. '"}}'
  return wrk.format("POST", "/v1/messages", headers, body)
end

done = common.done
