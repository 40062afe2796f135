-- wrk script for bench/run.py. Environment: BENCH_METHOD (GET|PATCH), BENCH_KEY
-- (sent as X-Gateway-Key when set), BENCH_NONCE (in every PATCH body of this run).
-- done() prints one parseable line.
--
-- wrk ends a run by closing its connections mid-write; the gateway marks those writes
-- as left, and the next PATCH with the same body would be taken for their agent's
-- resend (README, "resend"). A body of its own per run keeps each run a run of writes.
wrk.method = os.getenv("BENCH_METHOD") or "GET"
local key = os.getenv("BENCH_KEY")
if key and key ~= "" then
  wrk.headers["X-Gateway-Key"] = key
end
if wrk.method == "PATCH" then
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = '{"qty":8,"name":"Widget renamed","run":"' .. (os.getenv("BENCH_NONCE") or "") .. '"}'
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH p50_us=%d p99_us=%d rps=%.2f requests=%d duration_us=%d " ..
    "non2xx=%d connect=%d read=%d write=%d timeout=%d\n",
    latency:percentile(50), latency:percentile(99),
    summary.requests / (summary.duration / 1e6), summary.requests, summary.duration,
    e.status, e.connect, e.read, e.write, e.timeout))
end
