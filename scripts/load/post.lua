-- wrk script: POSTs the JSON body in $LOAD_BODY with "%s" replaced by
-- questions taken in turn, and prints a RESULT line of JSON at the end.
local questions = {
  "why does the moon cause tides", "how do honeybees make honey", "who built the first quartz clock",
  "what is the metric system", "who invented the printing press", "how far can a lighthouse be seen",
  "what is a spring tide", "when was the metre defined", "how do bees communicate", "what is movable type",
}
local n = 0
local body = os.getenv("LOAD_BODY") or error("LOAD_BODY is not set")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

request = function()
  n = n + 1
  local q = questions[(n % #questions) + 1]
  return wrk.format(nil, nil, nil, string.format(body, q))
end

done = function(summary, latency, requests)
  io.write(string.format('RESULT {"requests": %d, "errors": %d, "non_2xx": %d, "p50_ms": %.2f, "p90_ms": %.2f, "p99_ms": %.2f, "max_ms": %.2f, "rps": %.2f}\n',
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, summary.requests / (summary.duration / 1e6)))
end
