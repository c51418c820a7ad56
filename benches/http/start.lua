-- wrk script, phase "starts": every request starts a new session of
-- benches/http/tiny.scxml. Replies are checked and summarised by
-- common.lua.

PHASE = "starts"
dofile("benches/http/common.lua")

function setup(thread)
  register_thread(thread)
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

