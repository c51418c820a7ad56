-- wrk script, phase "events": POSTs event 'ping' (body n=1) to sessions
-- that already exist, round-robin. The session ids, one a line, come from
-- the file named by the first script argument (wrk ... -- IDS_FILE).
-- Non-2xx replies are counted per thread and summed in done(), which
-- prints one JSON line.

local threads = {}
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

function init(args)
  non2xx = 0
  first_bad = ""
  local file = args[1]
  if not file then
    error("events.lua: pass the ids file after '--'")
  end
  local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
  reqs = {}
  for line in io.lines(file) do
    local id = line:match("^%s*(.-)%s*$")
    if id ~= "" then
      reqs[#reqs + 1] = wrk.format("POST", "/scxml/session/" .. id .. "/event/ping", headers, "n=1")
    end
  end
  if #reqs == 0 then
    error("events.lua: no session ids in " .. file)
  end
  -- Threads start at different offsets so that they do not all queue on
  -- the same session at the same moment.
  cursor = ((tid or 0) * 7919) % #reqs
end

function request()
  cursor = cursor % #reqs + 1
  return reqs[cursor]
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
    '{"phase":"events","requests":%d,"duration_s":%.3f,"requests_per_sec":%.1f,' ..
    '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"non2xx":%d,"errors":%d}\n',
    summary.requests, summary.duration / 1e6,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, bad, errors))
  if sample ~= "" then
    io.stderr:write("first non-2xx reply: " .. sample .. "\n")
  end
end
