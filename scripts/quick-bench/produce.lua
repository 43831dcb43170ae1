-- wrk script: POST a produce request of N records (N from the RECORDS env var, default 1),
-- each with a ~100-byte JSON value. Counts non-200 answers as errors.
local n = tonumber(os.getenv("RECORDS") or "1")
local value = string.rep("x", 96)
local recs = {}
for i = 1, n do
  recs[i] = '{"key":"k' .. i .. '","value":"' .. value .. '"}'
end
wrk.method = "POST"
wrk.body = '{"records":[' .. table.concat(recs, ",") .. ']}'
wrk.headers["Content-Type"] = "application/vnd.kafka.json.v2+json"

local bad = 0
function response(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end
function done(summary, latency, requests)
  io.write(string.format("records/request=%d requests/s=%.0f records/s=%.0f p50=%.1fms p99=%.1fms non200=%d\n",
    n, summary.requests / (summary.duration / 1e6), n * summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, bad))
end
