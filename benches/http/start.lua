-- wrk script, phase "starts": every request starts a new session of
-- benches/http/tiny.scxml. Non-2xx replies are counted per thread and
-- summed in done(), which prints one JSON line.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non2xx = 0
  first_bad = ""
  wrk.method = "POST"
  wrk.path = "/scxml/session/start"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  wrk.body = "src=benches/http/tiny.scxml"
  req = wrk.format()
end

function request()
  return req
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if first_bad == "" then
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
    '{"phase":"starts","requests":%d,"duration_s":%.3f,"requests_per_sec":%.1f,' ..
    '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"non2xx":%d,"errors":%d}\n',
    summary.requests, summary.duration / 1e6,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, bad, errors))
  if sample ~= "" then
    io.stderr:write("first non-2xx reply: " .. sample .. "\n")
  end
end
