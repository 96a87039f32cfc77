-- What a call's outcome does to the breaker. (after clock.lua: `now`, `stamp`)
-- KEYS[1] breaker hash; ARGV: outcome (success | failure | abandon), the caller's probe token
-- ('' for a call let through while closed), failure threshold.
-- Returns {state, failures, from_state, stamp}; from_state is '' unless this call made a
-- transition (closed -> open, half_open -> closed, half_open -> open).
local key = KEYS[1]
local outcome = ARGV[1]
local token = ARGV[2]
local threshold = tonumber(ARGV[3])
local h = redis.call('HMGET', key, 'state', 'failures', 'probe_token')
local state = h[1] or 'closed'
local failures = tonumber(h[2]) or 0
if token ~= '' then
    -- A probe's outcome counts only while it is still the probe: a holder whose deadline
    -- passed and whose probe went to someone else (or a reset) must not change the state.
    if state ~= 'half_open' or h[3] ~= token then
        return {state, failures, '', stamp}
    end
    if outcome == 'success' then
        redis.call('HSET', key, 'state', 'closed', 'failures', 0, 'changed_at', stamp)
        redis.call('HDEL', key, 'opened_at', 'probe_token', 'probe_deadline')
        return {'closed', 0, 'half_open', stamp}
    end
    if outcome == 'abandon' then
        -- No verdict (the caller was interrupted): free the probe for the next caller now.
        redis.call('HSET', key, 'probe_deadline', 0)
        return {state, failures, '', stamp}
    end
    failures = failures + 1
    redis.call('HSET', key, 'state', 'open', 'failures', failures, 'opened_at', stamp,
        'changed_at', stamp)
    redis.call('HDEL', key, 'probe_token', 'probe_deadline')
    return {'open', failures, 'half_open', stamp}
end
-- Calls let through while closed that finish after the breaker left closed are stale news:
-- counting them would extend or end a cooldown some other caller started.
if state ~= 'closed' or outcome == 'abandon' then
    return {state, failures, '', stamp}
end
if outcome == 'success' then
    if failures ~= 0 then
        redis.call('HSET', key, 'failures', 0)
    end
    return {state, 0, '', stamp}
end
failures = redis.call('HINCRBY', key, 'failures', 1)
if failures >= threshold then
    redis.call('HSET', key, 'state', 'open', 'opened_at', stamp, 'changed_at', stamp)
    return {'open', failures, 'closed', stamp}
end
return {state, failures, '', stamp}
