-- Report a call's outcome: reconcile its tokens, follow the server's headers, back off or
-- recover the concurrency, count it for the run page.
-- KEYS[2]: the endpoint's request slots (holders zset, for the concurrency in flight);
-- KEYS[3], KEYS[4] (when the call belongs to a run): prefix of the run's 10-second counters,
-- and the run's totals, both hashes of req, tok, r429.
-- ARGV[4]: estimated tokens; ARGV[5]: tokens the response's usage reported (-1: none);
-- ARGV[6]: ok | 429 | error | aborted (never sent); ARGV[7..12]: limit, remaining and reset (ms)
-- of requests, then of tokens, from the headers (-1: absent); ARGV[13]: Retry-After ms (-1);
-- ARGV[14]: when the call was sent (ms); ARGV[15]: configured max concurrent (0: none);
-- ARGV[16]: seconds the run's totals are kept.
local estimate, actual, outcome = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local h = {}
local has_headers = false
for i = 7, 12 do
    h[i - 6] = tonumber(ARGV[i])
    if h[i - 6] >= 0 then has_headers = true end
end
local retry_after, started = tonumber(ARGV[13]), tonumber(ARGV[14])
local ceiling, totals_ttl = tonumber(ARGV[15]), tonumber(ARGV[16])
local cool = field('cool') or 0
local FORGET_CAP_MS = 600000

if h[1] > 0 then redis.call('HSET', state, 'lr', h[1]) end
if h[4] > 0 then redis.call('HSET', state, 'lt', h[4]) end
if has_headers then
    redis.call('HSET', state, 'hs', now, 'hrr', h[2], 'hrt', h[5])
end

-- Requests: a call never sent gives its request back; the server's remaining count wins when
-- lower (another client on the same key). Without a known limit, none left means wait for reset.
local rpm = per_minute(rpm_cfg, 'lr')
if rpm > 0 then
    local lvl = level(rpm, 'rl', 'rt')
    if outcome == 'aborted' then lvl = math.min(capacity(rpm), lvl + 1) end
    if h[2] >= 0 then lvl = math.min(lvl, h[2]) end
    redis.call('HSET', state, 'rl', lvl, 'rt', now)
elseif h[2] == 0 and h[3] > 0 then
    cool = math.max(cool, now + h[3])
end

-- Tokens: the estimate charged before the call is reconciled with the usage reported; a call
-- the server refused or never saw gives its estimate back.
local tpm = per_minute(tpm_cfg, 'lt')
if tpm > 0 then
    local lvl = level(tpm, 'tl', 'tt')
    if outcome == 'ok' and actual >= 0 then
        lvl = lvl + estimate - actual
    elseif outcome == '429' or outcome == 'aborted' then
        lvl = lvl + estimate
    end
    lvl = math.min(capacity(tpm), lvl)
    if h[5] >= 0 then lvl = math.min(lvl, h[5]) end
    redis.call('HSET', state, 'tl', lvl, 'tt', now)
elseif h[5] == 0 and h[6] > 0 then
    cool = math.max(cool, now + h[6])
end

if outcome == '429' then
    redis.call('HINCRBY', state, 'n429', 1)
    if retry_after >= 0 then cool = math.max(cool, now + retry_after) end
    -- Halve the concurrency, headers or not, once per wave of calls (only a call sent after
    -- the last cut can cut again): a 429 under a budget the pacing keeps means calls reached
    -- the server bunched together, and fewer in flight bunch less.
    if started >= (field('cut') or 0) then
        local in_flight = redis.call('ZCARD', KEYS[2])
        local cap = math.min(field('cap') or in_flight, in_flight)
        redis.call('HSET', state, 'cap', math.max(1, math.floor(cap / 2)), 'cut', now)
    end
elseif outcome == 'ok' then
    -- Additive recovery: about one more concurrent call per cap's worth of successes.
    local cap = field('cap')
    if cap then
        cap = cap + 1 / cap
        if (ceiling > 0 and cap >= ceiling)
            or (ceiling == 0 and now - (field('cut') or 0) > FORGET_CAP_MS) then
            redis.call('HDEL', state, 'cap', 'cut')
        else
            redis.call('HSET', state, 'cap', cap)
        end
    end
end
if cool > now then redis.call('HSET', state, 'cool', cool) end
redis.call('PEXPIRE', state, 86400000)

if KEYS[4] and outcome ~= 'aborted' then
    local bucket = KEYS[3] .. math.floor(now / 10000)
    local tokens = (outcome == 'ok' and actual > 0) and actual or 0
    local limited = outcome == '429' and 1 or 0
    for _, key in ipairs({bucket, KEYS[4]}) do
        redis.call('HINCRBY', key, 'req', 1)
        redis.call('HINCRBY', key, 'tok', tokens)
        redis.call('HINCRBY', key, 'r429', limited)
    end
    redis.call('EXPIRE', bucket, 120)
    redis.call('EXPIRE', KEYS[4], totals_ttl)
end
return 1
