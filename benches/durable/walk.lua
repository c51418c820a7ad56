-- wrk script for benches/durable/sessions.sh: a fixed number of requests,
-- each for a different session, split over wrk's threads.
--
--   wrk ... -s walk.lua URL -- start PHASE THREADS OUTDIR N [SRC [PARAMS]]
--     starts N sessions of SRC (default benches/http/tiny.scxml), with the
--     form-encoded start PARAMS if given, and writes their ids, one a
--     line, to OUTDIR/ids-<thread>.txt
--   wrk ... -s walk.lua URL -- event PHASE THREADS OUTDIR IDS FIRST COUNT
--     POSTs event 'ping' (n=1) once to each of the sessions on lines
--     FIRST .. FIRST+COUNT-1 of the file IDS (thread t of T takes lines
--     FIRST+t, FIRST+t+T, ...), never twice to the same session
--
-- (Debian's wrk 4.1.0: thread:stop() ends a thread's loop, but wrk's main
-- thread still sleeps for the whole -d unless interrupted.)
-- A thread whose share is answered writes OUTDIR/done-<thread> and stops;
-- sessions.sh interrupts wrk (SIGINT) once every thread is done, or wrk
-- ends at its -d duration with shares left. Until it stops, a thread whose
-- share is sent but not all answered keeps its other connections waiting
-- 100 ms between GET /health requests (wrk cannot leave a connection
-- idle); those are not counted as requests.
--
-- done() prints one JSON line: requests (replies to the phase's requests),
-- duration_s, requests_per_sec, latency percentiles (wrk's, over all
-- replies), non2xx, errors (wrk's socket errors and timeouts), and
-- exhausted (every share was answered before the duration ran out).

local threads = {}
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

-- The operator's token the script's server was given (sessions.sh exports it).
local auth = "Bearer " .. (os.getenv("ORS_BENCH_TOKEN") or "")
wrk.headers["Authorization"] = auth
local form = { ["Content-Type"] = "application/x-www-form-urlencoded", ["Authorization"] = auth }

function init(args)
  mode, phase = args[1], args[2]
  local nthreads, outdir = tonumber(args[3]), args[4]
  if (mode ~= "start" and mode ~= "event") or not nthreads or not outdir then
    error("walk.lua: arguments: start PHASE THREADS OUTDIR N | event PHASE THREADS OUTDIR IDS FIRST COUNT")
  end
  ok, non2xx, health, sent, first_bad, finished = 0, 0, 0, 0, "", 0
  -- wrk calls request() once on thread 0 right after init, only to check
  -- the script (script_verify_request); that call must not use up a
  -- request of the share.
  verifying = (tid == 0)
  marker = outdir .. "/done-" .. tid
  health_req = wrk.format("GET", "/health")
  if mode == "start" then
    local n = tonumber(args[5])
    share = math.floor(n / nthreads) + ((tid < n % nthreads) and 1 or 0)
    local body = "src=" .. (args[6] or "benches/http/tiny.scxml")
    if args[7] and args[7] ~= "" then body = body .. "&" .. args[7] end
    start_req = wrk.format("POST", "/scxml/session/start", form, body)
    idfile = assert(io.open(outdir .. "/ids-" .. tid .. ".txt", "w"))
  else
    local first, count = tonumber(args[6]), tonumber(args[7])
    mine = {}
    local line_no, last = 0, first + count - 1
    for line in io.lines(args[5]) do
      line_no = line_no + 1
      if line_no > last then break end
      if line_no >= first and (line_no - first) % nthreads == tid then
        mine[#mine + 1] = line
      end
    end
    share = #mine
  end
  if share == 0 then
    finish()
  end
end

function finish()
  if idfile then idfile:close(); idfile = nil end
  local f = assert(io.open(marker, "w"))
  f:close()
  finished = 1
  wrk.thread:stop()
end

function delay()
  if sent >= share then return 100 end
  return 0
end

function request()
  if verifying then
    verifying = false
    return health_req
  end
  if sent >= share then
    return health_req
  end
  sent = sent + 1
  if mode == "start" then
    return start_req
  end
  return wrk.format("POST", "/scxml/session/" .. mine[sent] .. "/event/ping", form, "n=1")
end

function response(status, headers, body)
  if status >= 200 and status <= 299 then
    local id = body and body:match('"sessionid":"([^"]+)"')
    if not id then
      health = health + 1 -- a GET /health
      return
    end
    ok = ok + 1
    if idfile then idfile:write(id, "\n") end
  else
    non2xx = non2xx + 1
    if first_bad == "" then
      first_bad = tostring(status) .. " " .. string.sub(body or "", 1, 200)
    end
  end
  if ok + non2xx >= share and finished == 0 then
    finish()
  end
end

function done(summary, latency, requests)
  local good, bad, idle, sample, all_done, name = 0, 0, 0, "", true, ""
  for _, t in ipairs(threads) do
    good = good + (t:get("ok") or 0)
    bad = bad + (t:get("non2xx") or 0)
    idle = idle + (t:get("health") or 0)
    if (t:get("finished") or 0) == 0 then all_done = false end
    local s = t:get("first_bad")
    if sample == "" and s and s ~= "" then sample = s end
    name = t:get("phase") or name
  end
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.timeout
  local secs = summary.duration / 1e6
  io.write(string.format(
    '{"phase":"%s","requests":%d,"duration_s":%.3f,"requests_per_sec":%.1f,' ..
    '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"non2xx":%d,"errors":%d,"exhausted":%s}\n',
    name, good + bad, secs, (good + bad) / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, bad, errors,
    all_done and "true" or "false"))
  io.stderr:write(string.format("walk.lua: %d GET /health while waiting for the last replies\n", idle))
  if sample ~= "" then
    io.stderr:write("first non-2xx reply: " .. sample .. "\n")
  end
end
