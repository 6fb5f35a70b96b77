-- wrk script for bench/bench_serving.py: POST the body in $WRK_BODY_FILE as JSON, count responses by
-- status class, and print one summary line ("WRK_SUMMARY {...}") after wrk's own report.
--
--   WRK_BODY_FILE=body.json wrk -t 2 -c 4 -d 10s --latency -s bench/wrk_post.lua http://127.0.0.1:PORT/predict

local path = os.getenv("WRK_BODY_FILE")
local file = assert(io.open(path, "rb"), "WRK_BODY_FILE must name a readable file")
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok_2xx = 0
  other = 0
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok_2xx = ok_2xx + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local ok_total, other_total = 0, 0
  for _, thread in ipairs(threads) do
    ok_total = ok_total + thread:get("ok_2xx")
    other_total = other_total + thread:get("other")
  end
  local errors = summary.errors
  io.write(string.format(
    'WRK_SUMMARY {"requests": %d, "duration_us": %d, "ok_2xx": %d, "non_2xx": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, ok_total, other_total,
    errors.connect, errors.read, errors.write, errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean
  ))
end
