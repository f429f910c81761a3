-- GET /v1/threads/t<i>/messages?limit=50: newest page of a uniformly random thread.
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
local common = require("common")

setup = common.setup_counter()

function init(args)
  common.init(args)
  headers = { ["Authorization"] = "Bearer " .. api_key }
end

function request()
  return wrk.format("GET", "/v1/threads/t" .. math.random(1, nthreads) .. "/messages?limit=50", headers)
end

done = common.done
