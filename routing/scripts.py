"""Redis Lua scripts behind Flumery's channel transactions.

Data model (one Redis database may hold many agents):

* ``<queue>``: a list of message tags, pushed on the left, taken from the right (FIFO);
* ``<queue>:bell``: a wake-up list; idle consumers block on the bells of their queues (BRPOP) and then FETCH;
  popping a bell never takes a message;
* ``flumery.msg:<tag>``: a hash per message: ``p`` the kombu/Celery message envelope (JSON, without its body),
  ``b`` the body (the msgpack-serialized task arguments, raw bytes: no base64, no JSON escaping), ``n`` its
  events, ``q`` its queue, ``s``/``f`` the sizes hash and field it counts in, and ``o`` the consumer holding it
  while in flight;
* ``flumery.inflight``: a sorted set of taken, unacknowledged tags, scored by the start of their lease;
* ``<exchange>:sizes``: a hash of events held per channel (queued plus in flight): the channel's fill level.

The payload is written once (by PUT) and deleted once (by ACK); taking and giving back move only the tag.  Each
script runs atomically inside Redis, which is what makes the channel operations transactions:

* PUT: Flume's put.  Checks every target channel's capacity, then stores and queues every message, or does
  nothing.  One call covers all required channels of a source batch.
* FETCH: Flume's take.  Pops a tag and records it as in flight in the same step, so a consumer killed at any
  instant leaves the message either queued or in flight (from where RECLAIM returns it), never nowhere.
  kombu's own Redis consumer pops with BRPOP and records the message in a second step, and loses it if killed
  in between.
* ACK: Flume's take commit.  Deletes the message and releases its events from the channel size, but only if
  the caller still holds it (a message reclaimed after its lease expired, maybe taken by another consumer
  since, must not be acknowledged by the first).
* GIVEBACK: Flume's take rollback.  Returns a held message to the front (or back) of its queue.
* TOUCH: renews the leases of held messages (a slow store must not make its message reappear).
* RECLAIM: returns messages whose lease expired (their consumer died) to the front of their queues.
"""

MSG_PREFIX = "flumery.msg:"
INFLIGHT = "flumery.inflight"

# KEYS: none (single-instance Redis; keys are derived)
# ARGV: n_targets, then per target: queue, sizes_key, field, capacity, n_events, n_messages,
#       then per message: tag, events, envelope, body
# Returns {} on success, or {field, size, capacity} of the first channel without room (nothing written).
PUT = """
local n = tonumber(ARGV[1])
local pos = 2
local targets = {}
for i = 1, n do
  local t = {queue = ARGV[pos], sizes = ARGV[pos + 1], field = ARGV[pos + 2], capacity = tonumber(ARGV[pos + 3]),
             events = tonumber(ARGV[pos + 4]), count = tonumber(ARGV[pos + 5]), first = pos + 6}
  pos = pos + 6 + 4 * t.count
  targets[i] = t
end
for i = 1, n do
  local t = targets[i]
  local size = tonumber(redis.call('HGET', t.sizes, t.field) or '0')
  if size + t.events > t.capacity then
    return {t.field, size, t.capacity}
  end
end
for i = 1, n do
  local t = targets[i]
  for j = t.first, t.first + 4 * (t.count - 1), 4 do
    local tag = ARGV[j]
    redis.call('HSET', 'flumery.msg:' .. tag, 'p', ARGV[j + 2], 'b', ARGV[j + 3], 'n', ARGV[j + 1],
               'q', t.queue, 's', t.sizes, 'f', t.field)
    redis.call('LPUSH', t.queue, tag)
  end
  redis.call('HINCRBY', t.sizes, t.field, t.events)
  if redis.call('LLEN', t.queue .. ':bell') == 0 then
    redis.call('LPUSH', t.queue .. ':bell', '1')
  end
end
return {}
"""

# ARGV: now, owner, start (rotation of the queue list), max_events, queue...
# Takes the first message of the first non-empty queue, then more of the same queue while their events still fit
# in max_events (0: just one).  Returns {queue, envelope, body, envelope, body, ...} or nil.
FETCH = """
local nq = #ARGV - 4
local budget = tonumber(ARGV[4])
for k = 0, nq - 1 do
  local queue = ARGV[5 + ((tonumber(ARGV[3]) + k) % nq)]
  local out = {queue}
  local taken = 0
  while true do
    local tag = redis.call('LINDEX', queue, -1)
    if not tag then break end
    local key = 'flumery.msg:' .. tag
    local message = redis.call('HMGET', key, 'p', 'b', 'n')
    if message[1] and #out > 1 and taken + tonumber(message[3]) > budget then break end
    redis.call('RPOP', queue)
    if message[1] then
      redis.call('HSET', key, 'o', ARGV[2])
      redis.call('ZADD', 'flumery.inflight', ARGV[1], tag)
      out[#out + 1] = message[1]
      out[#out + 1] = message[2]
      taken = taken + tonumber(message[3])
      if taken >= budget then break end
    end
    -- a tag without its message (purged meanwhile) is dropped
  end
  if #out > 1 then
    if redis.call('LLEN', queue) > 0 and redis.call('LLEN', queue .. ':bell') == 0 then
      redis.call('LPUSH', queue .. ':bell', '1')
    end
    return out
  end
end
return nil
"""

# ARGV: owner, tag...  Acknowledges every listed message this owner holds; returns how many it acknowledged
# (a message no longer held, because its lease expired and it was given back, is left alone).
ACK = """
local acked = 0
for i = 2, #ARGV do
  local key = 'flumery.msg:' .. ARGV[i]
  local info = redis.call('HMGET', key, 'o', 's', 'f', 'n')
  if info[1] == ARGV[1] and redis.call('ZREM', 'flumery.inflight', ARGV[i]) == 1 then
    redis.call('DEL', key)
    redis.call('HINCRBY', info[2], info[3], -tonumber(info[4]))
    acked = acked + 1
  end
end
return acked
"""

# ARGV: tag, owner, where ('front' | 'back').  Returns 1 if given back, 0 if not held by this owner.
GIVEBACK = """
local key = 'flumery.msg:' .. ARGV[1]
local info = redis.call('HMGET', key, 'o', 'q')
if info[1] ~= ARGV[2] or redis.call('ZREM', 'flumery.inflight', ARGV[1]) == 0 then
  return 0
end
redis.call('HDEL', key, 'o')
if ARGV[3] == 'front' then
  redis.call('RPUSH', info[2], ARGV[1])
else
  redis.call('LPUSH', info[2], ARGV[1])
end
if redis.call('LLEN', info[2] .. ':bell') == 0 then
  redis.call('LPUSH', info[2] .. ':bell', '1')
end
return 1
"""

# ARGV: now, tag...  Returns the number of leases renewed (tags no longer in flight are left alone).
TOUCH = """
local renewed = 0
for i = 2, #ARGV do
  renewed = renewed + redis.call('ZADD', 'flumery.inflight', 'XX', 'CH', ARGV[1], ARGV[i])
end
return renewed
"""

# ARGV: leases started before this time are expired, limit.  Returns the number of messages given back.
RECLAIM = """
local expired = redis.call('ZRANGEBYSCORE', 'flumery.inflight', '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, tag in ipairs(expired) do
  redis.call('ZREM', 'flumery.inflight', tag)
  local key = 'flumery.msg:' .. tag
  local queue = redis.call('HGET', key, 'q')
  if queue then
    redis.call('HDEL', key, 'o')
    redis.call('RPUSH', queue, tag)
    if redis.call('LLEN', queue .. ':bell') == 0 then
      redis.call('LPUSH', queue .. ':bell', '1')
    end
  end
end
return #expired
"""

# ARGV: queue.  Deletes every queued message of the queue and releases their events.  Returns the count.
PURGE = """
local tags = redis.call('LRANGE', ARGV[1], 0, -1)
for _, tag in ipairs(tags) do
  local key = 'flumery.msg:' .. tag
  local info = redis.call('HMGET', key, 's', 'f', 'n')
  if info[1] then
    redis.call('HINCRBY', info[1], info[2], -tonumber(info[3]))
  end
  redis.call('DEL', key)
end
redis.call('DEL', ARGV[1])
return #tags
"""
