-- Give up the caller's slot or its place in the queue, whichever it has.
redis.call('ZREM', holders, token)
redis.call('ZREM', waiters, token)
redis.call('ZREM', waiting, token)
redis.call('DEL', wake_prefix .. token)
hand_over(nil)
return 1
