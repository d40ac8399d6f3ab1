-- Load for the X API simulator (followq sim) with wrk: follow requests spread over 1000
-- users, each to a new target. Start the simulator with users 1..1000 whose access tokens
-- are tok1..tok1000, then run wrk, e.g.:
--
--   followq sim --listen 127.0.0.1:18787 --window-requests 1000000000 --daily-cap 0 \
--     $(for i in $(seq 1 1000); do printf -- '--user %s:tok%s:ref%s ' $i $i $i; done)
--   wrk -t1 -c64 -d10s -s scripts/sim-wrk.lua http://127.0.0.1:18787
--
-- Afterwards GET /__sim/stats shows the requests counted, which must equal wrk's total.
counter = 0
request = function()
  counter = counter + 1
  local u = math.random(1, 1000)
  wrk.headers["Authorization"] = "Bearer tok" .. u
  wrk.headers["Content-Type"] = "application/json"
  return wrk.format("POST", "/2/users/" .. u .. "/following", nil,
    '{"target_user_id":"' .. (100000 + counter) .. '"}')
end
