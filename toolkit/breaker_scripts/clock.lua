-- Put before every breaker script by toolkit/breaker_store.py: Redis's own clock, so workers
-- on several machines agree on when a cooldown ends. `stamp` is `now` as text: a reply carries
-- floats as strings, since Redis truncates Lua numbers to integers.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local stamp = string.format('%.6f', now)
