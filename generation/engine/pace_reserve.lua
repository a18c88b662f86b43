-- Reserve a call's place in the endpoint's budgets: one request and its estimated tokens.
-- ARGV[4]: the estimated tokens. Returns {milliseconds to wait before calling, now}.
-- Budgets go negative: each reservation queues behind the earlier ones, first come first served.
local cost = tonumber(ARGV[4])
local wait = 0
local cool = field('cool') or 0
if cool > now then wait = cool - now end
local rpm = per_minute(rpm_cfg, 'lr')
if rpm > 0 then
    local lvl = level(rpm, 'rl', 'rt') - 1
    redis.call('HSET', state, 'rl', lvl, 'rt', now)
    if lvl < 0 then wait = math.max(wait, -lvl * 60000 / rpm) end
end
local tpm = per_minute(tpm_cfg, 'lt')
if tpm > 0 then
    local lvl = level(tpm, 'tl', 'tt') - cost
    redis.call('HSET', state, 'tl', lvl, 'tt', now)
    if lvl < 0 then wait = math.max(wait, -lvl * 60000 / tpm) end
end
return {math.ceil(wait), now}
