-- Shared head of the endpoint pacing scripts (generation/engine/pacing.py).
-- KEYS[1]: the endpoint's pacing state (a hash).
-- ARGV[1], ARGV[2]: configured requests and tokens per minute (0: none, use what the server
-- said in its x-ratelimit-limit-* headers); ARGV[3]: seconds of budget a bucket holds.
local state = KEYS[1]
local rpm_cfg, tpm_cfg, burst_s = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function field(name)
    return tonumber(redis.call('HGET', state, name))
end

-- The budget per minute in force: the configured one, else the one the server announced.
local function per_minute(configured, learned)
    if configured > 0 then return configured end
    return field(learned) or 0
end

local function capacity(limit)
    return math.max(1, limit * burst_s / 60)
end

-- A per-minute budget is a token bucket refilled continuously at limit/60 per second and
-- holding `burst_s` seconds of it. Its level now; negative when calls are already queued.
local function level(limit, level_field, time_field)
    local lvl, ts = field(level_field), field(time_field)
    if not lvl then return capacity(limit) end
    return math.min(capacity(limit), lvl + (now - ts) * limit / 60000)
end
