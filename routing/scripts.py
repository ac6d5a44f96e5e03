"""Redis Lua scripts behind Flumery's channel transactions.

Each script runs atomically inside Redis, which is what makes the channel operations transactional:

* ``PUT``: Flume's put transaction.  Checks every target channel's capacity, then pushes every message and
  counts the events, or does nothing at all.  One call covers all required channels of a source batch, so a
  batch is either in every required channel or in none.
* ``FETCH``: Flume's take.  Pops one message and records it as unacknowledged (kombu's ``unacked`` hash and
  ``unacked_index`` sorted set, plus the fetching consumer in ``owner``) in the same step.  kombu's own Redis
  consumer pops with BRPOP and records the message afterwards; a worker killed between the two loses it.
* ``ACK``: Flume's take commit.  Forgets the message and releases its events from the channel's size, but only
  if the caller still owns it (a message that was given back after its visibility timeout, and maybe taken by
  another worker since, must not be acknowledged by the first taker).
* ``TOUCH``: renews the visibility lease of messages a live worker still holds (a slow store must not make its
  message reappear and be written twice).  It needs no owner check: renewing a lease only delays recovery.

Each channel has a "bell" list next to its queue: a message push rings it, and idle consumers block on the bells
with BRPOP (which may pop a bell, never a message) and then fetch with ``FETCH``.
"""

# KEYS: sizes_hash, then per target: queue, bell
# ARGV: n_targets, then per target: field, capacity, n_events, n_messages, message...
# Returns {} on success, or {field, size, capacity} of the first channel without room.
PUT = """
local n = tonumber(ARGV[1])
local pos = 2
local targets = {}
for i = 1, n do
  local t = {field = ARGV[pos], capacity = tonumber(ARGV[pos + 1]), events = tonumber(ARGV[pos + 2]),
             first = pos + 4, count = tonumber(ARGV[pos + 3]),
             queue = KEYS[2 * i], bell = KEYS[2 * i + 1]}
  pos = pos + 4 + t.count
  targets[i] = t
end
for i = 1, n do
  local t = targets[i]
  local size = tonumber(redis.call('HGET', KEYS[1], t.field) or '0')
  if size + t.events > t.capacity then
    return {t.field, size, t.capacity}
  end
end
for i = 1, n do
  local t = targets[i]
  for j = t.first, t.first + t.count - 1 do
    redis.call('LPUSH', t.queue, ARGV[j])
  end
  redis.call('HINCRBY', KEYS[1], t.field, t.events)
  if redis.call('LLEN', t.bell) == 0 then
    redis.call('LPUSH', t.bell, '1')
  end
end
return {}
"""

# KEYS: unacked_hash, unacked_index, owner_hash, then per queue: queue, bell
# ARGV: now, owner_token, start (0-based rotation of the queue list)
# Returns {queue, payload} or nil.
FETCH = """
local nq = (#KEYS - 3) / 2
local start = tonumber(ARGV[3])
for k = 0, nq - 1 do
  local i = ((start + k) % nq) + 1
  local queue, bell = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  local item = redis.call('RPOP', queue)
  if item then
    local msg = cjson.decode(item)
    local props = msg['properties']
    local tag = props['delivery_tag']
    local info = props['delivery_info']
    redis.call('HSET', KEYS[1], tag,
      '[' .. item .. ',' .. cjson.encode(info['exchange']) .. ',' .. cjson.encode(info['routing_key']) .. ']')
    redis.call('ZADD', KEYS[2], ARGV[1], tag)
    redis.call('HSET', KEYS[3], tag, ARGV[2])
    if redis.call('LLEN', queue) > 0 and redis.call('LLEN', bell) == 0 then
      redis.call('LPUSH', bell, '1')
    end
    return {queue, item}
  end
end
return nil
"""

# KEYS: unacked_hash, unacked_index, owner_hash, sizes_hash
# ARGV: tag, owner_token, size_field ('' = not a channel message), n_events
# Returns 1 if acknowledged, 0 if the message was no longer ours.
ACK = """
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('HDEL', KEYS[3], ARGV[1])
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[3] ~= '' then
  redis.call('HINCRBY', KEYS[4], ARGV[3], -tonumber(ARGV[4]))
end
return 1
"""

# KEYS: unacked_index
# ARGV: now, tag...
# Returns the number of leases renewed (tags no longer unacknowledged are left alone).
TOUCH = """
local renewed = 0
for i = 2, #ARGV do
  renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', ARGV[1], ARGV[i])
end
return renewed
"""
