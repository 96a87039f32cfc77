-- May this caller call the upstream? (after clock.lua: `now`, `stamp`)
-- KEYS[1] breaker hash; ARGV: cooldown seconds, probe timeout seconds, the caller's token.
-- Returns {decision, state, failures, retry_in, from_state, stamp}; decision is allow | probe |
-- reject; from_state is '' unless this call made a transition (only open -> half_open here).
local key = KEYS[1]
local cooldown = tonumber(ARGV[1])
local probe_timeout = tonumber(ARGV[2])
local h = redis.call('HMGET', key, 'state', 'failures', 'opened_at', 'probe_deadline')
local state = h[1] or 'closed'
local failures = tonumber(h[2]) or 0
if state == 'closed' then
    return {'allow', state, failures, '0', '', stamp}
end
if state == 'open' then
    local wait = (tonumber(h[3]) or now) + cooldown - now
    if wait > 0 then
        return {'reject', state, failures, string.format('%.6f', wait), '', stamp}
    end
    redis.call('HSET', key, 'state', 'half_open', 'probe_token', ARGV[3],
        'probe_deadline', string.format('%.6f', now + probe_timeout), 'changed_at', stamp)
    return {'probe', 'half_open', failures, '0', 'open', stamp}
end
-- half_open: the probe belongs to its holder until its deadline (the holder may have died).
local deadline = tonumber(h[4]) or 0
if now < deadline then
    return {'reject', state, failures, string.format('%.6f', deadline - now), '', stamp}
end
redis.call('HSET', key, 'probe_token', ARGV[3],
    'probe_deadline', string.format('%.6f', now + probe_timeout))
return {'probe', state, failures, '0', '', stamp}
