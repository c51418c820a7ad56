-- wrk script, phase "events": POSTs event 'ping' (body n=1) to sessions
-- that already exist, round-robin. The session ids, one a line, come from
-- the file named by the first script argument (wrk ... -- IDS_FILE).
-- Replies are checked and summarised by common.lua.

PHASE = "events"
dofile("benches/http/common.lua")
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  register_thread(thread)
end

function init(args)
  non2xx = 0
  first_bad = ""
  local file = args[1]
  if not file then
    error("events.lua: pass the ids file after '--'")
  end
  local headers = { ["Content-Type"] = "application/x-www-form-urlencoded", ["Authorization"] = AUTH }
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

