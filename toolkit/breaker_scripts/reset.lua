-- An operator closes the breaker and forgets its failures. (after clock.lua: `now`, `stamp`)
-- KEYS[1] breaker hash. Returns {state, failures, from_state, stamp}, as record.lua does:
-- 'closed', the failures it had, and from_state '' if it was closed already (no transition).
local h = redis.call('HMGET', KEYS[1], 'state', 'failures')
redis.call('DEL', KEYS[1])
local previous = h[1] or 'closed'
if previous == 'closed' then
    previous = ''
end
return {'closed', tonumber(h[2]) or 0, previous, stamp}
