-- Shared by start.lua and events.lua (loaded with dofile from the
-- repository root, where load.sh runs wrk): counts non-2xx replies per
-- thread and prints one JSON summary line for the phase named PHASE.

threads = {}

-- The operator's token the script's server was given (load.sh exports it).
AUTH = "Bearer " .. (os.getenv("ORS_BENCH_TOKEN") or "")
wrk.headers["Authorization"] = AUTH

function register_thread(thread)
  table.insert(threads, thread)
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = (non2xx or 0) + 1
    if (first_bad or "") == "" then
      first_bad = tostring(status) .. " " .. string.sub(body or "", 1, 200)
    end
  end
end

function done(summary, latency, requests)
  local bad, sample = 0, ""
  for _, t in ipairs(threads) do
    bad = bad + (t:get("non2xx") or 0)
    local s = t:get("first_bad")
    if sample == "" and s and s ~= "" then sample = s end
  end
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.timeout
  io.write(string.format(
    '{"phase":"%s","requests":%d,"duration_s":%.3f,"requests_per_sec":%.1f,' ..
    '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"non2xx":%d,"errors":%d}\n',
    PHASE, summary.requests, summary.duration / 1e6,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, bad, errors))
  if sample ~= "" then
    io.stderr:write("first non-2xx reply: " .. sample .. "\n")
  end
end
