-- Shared head of the request gate's scripts (generation/engine/gate.py).
-- KEYS: holders (holder -> expiry ms), waiters (holder -> arrival ms), waiting (holder -> expiry ms),
-- and optionally an endpoint's pacing state, whose `cap` field (the concurrency learned after
-- 429s, generation/engine/pacing.py) lowers the limit.
-- ARGV: limit, the caller's holder token, hold ms, wait ms, prefix of the waiters' wake-up lists.
local holders, waiters, waiting = KEYS[1], KEYS[2], KEYS[3]
local limit, token = tonumber(ARGV[1]), ARGV[2]
if KEYS[4] then
    local cap = tonumber(redis.call('HGET', KEYS[4], 'cap'))
    if cap then limit = math.min(limit, math.max(1, math.floor(cap))) end
end
local hold_ms, wait_ms, wake_prefix = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Holders and waiters of a killed worker drop out once they expire.
redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
local gone = redis.call('ZRANGEBYSCORE', waiting, '-inf', now)
for _, w in ipairs(gone) do
    redis.call('ZREM', waiters, w)
    redis.call('ZREM', waiting, w)
end

-- Free slots go to the waiters in arrival order; each is woken through its own list.
local function hand_over(skip)
    local free = limit - redis.call('ZCARD', holders)
    if free <= 0 then return end
    for _, w in ipairs(redis.call('ZRANGE', waiters, 0, free - 1)) do
        redis.call('ZADD', holders, now + hold_ms, w)
        redis.call('ZREM', waiters, w)
        redis.call('ZREM', waiting, w)
        if w ~= skip then
            redis.call('RPUSH', wake_prefix .. w, '1')
            redis.call('PEXPIRE', wake_prefix .. w, wait_ms)
        end
    end
end
