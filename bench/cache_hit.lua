-- wrk script: POSTs one deterministic chat completion (bench/cache_hit.json) over and over, so
-- that every request after the first is a response-cache hit. Used by bench/cache_hit.sh; run
-- from the repository root.
local f = assert(io.open("bench/cache_hit.json", "r"))
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = f:read("*a")
f:close()
