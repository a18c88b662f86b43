-- Queue the caller (or refresh its place) and hand out free slots.
-- 1: the caller holds a slot; 0: it is queued and should wait on its wake-up list.
if redis.call('ZSCORE', holders, token) then
    -- handed a slot just after the caller's last wait timed out
    redis.call('DEL', wake_prefix .. token)
    return 1
end
redis.call('ZADD', waiters, 'NX', now, token)
redis.call('ZADD', waiting, now + wait_ms, token)
hand_over(token)
redis.call('PEXPIRE', holders, hold_ms)
redis.call('PEXPIRE', waiters, hold_ms)
redis.call('PEXPIRE', waiting, hold_ms)
if redis.call('ZSCORE', holders, token) then return 1 end
return 0
