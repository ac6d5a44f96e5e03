"""Redis Lua scripts behind Flumery's channel transactions.

Keyspace (names from :mod:`core.keys`; kombu's ``global_keyprefix`` goes in front of each in Redis):

* ``<queue>`` (``flumery.<agent>.<channel>``): a list of queued messages, pushed on the left, taken from the
  right (FIFO).  An item is either a message's tag (its hash holds the message) or, for a small message (data of
  at most :data:`INLINE_MAX_BYTES`), the message itself: a NUL, then its tag, template id, events and bytes, each
  followed by a NUL, then its data (tags and template ids never hold a NUL; the data comes last, so it may).  A
  small queued message costs one list item instead of a Redis key and a hash (over 100 bytes less: what a backlog
  of single events needs); FETCH gives it a hash when it takes it, so messages in flight are all alike;
* ``<queue>:bell``: a wake-up list; idle consumers block on the bells of their queues (BRPOP) and then FETCH;
  popping a bell never takes a message;
* ``<namespace><tag>`` (namespace ``flumery.msg:``): a hash per message: ``a`` its data (the msgpack of its
  batch's columns, raw bytes), ``n`` its events, ``z`` the bytes of its event bodies, ``t`` the id of its channel's
  template, and ``o`` the consumer holding it while in flight.  Everything else is the template's;
* ``<namespace><tag>.d``: a hash of data that several messages share (a batch replicated into several channels is
  stored once, not once per channel): ``a`` the data, ``r`` how many messages refer to it, and a field ``w:...``
  per sink worker process that took the data with its share token (:mod:`routing.shared_data`: its later takes of
  messages referring to it get only the key).  Such a message's hash
  holds ``d``, this key, instead of ``a``; the data is deleted with the last message that refers to it (ACK or
  PURGE).  Named after the first of those messages, which may be acknowledged before the others;
* ``<template namespace><id>`` (``flumery.tpl:``, derived from the message namespace by replacing its last four
  characters): a hash per channel template (:class:`routing.codec.Template`, content-addressed, written by PUT if
  missing, never deleted): ``e`` the kombu/Celery envelope (JSON, with the tag and event count left out), ``h``
  and ``t`` the task body's bytes before and after a message's data, ``q`` the channel's queue key, ``s`` and ``y``
  the keys of the sizes and bytes hashes it counts in and ``f`` its field there;
* messages stored by versions before templates hold, instead of ``a`` and ``t``: ``p`` the whole envelope, ``b``
  the whole task body, and ``q``, ``s``, ``y``, ``f`` themselves (some also lack ``z`` and ``y`` and count no
  bytes).  Every script still takes, acknowledges, gives back, reclaims and purges them; only PUT writes the new
  layout;
* ``flumery.inflight``: a sorted set of taken, unacknowledged tags, scored by the start of their lease;
* ``<exchange>:sizes`` (``flumery.<agent>:sizes``): a hash of events held per channel (queued plus in flight):
  the channel's fill level;
* ``<exchange>:bytes``: a hash of event body bytes held per channel, the same way.

How the scripts get their keys: every key a caller knows is passed in ``KEYS``, already prefixed (the in-flight
set, the sizes and bytes hashes, the queues and their bells), and so is the message namespace, as ``KEYS[1]``:
a message's key is derived from it and its tag, since no caller can name the messages FETCH will find.  Keys
that only a message knows (its queue, its sizes and bytes hashes) are read from its hash, where PUT wrote the
prefixed keys it was given; the bell suffix comes in ``ARGV``.  No script hard-codes a key name.  (On a Redis
Cluster, the derived keys are only reachable when they share a slot with ``KEYS``: use a hash tag as the prefix.)

The payload is written once (by PUT; a small one once more by FETCH, into its hash) and deleted once (by ACK or
PURGE, of its last message when it is shared); giving back and reclaiming move only the tag.  Each
script runs atomically inside Redis, which is what makes the channel operations transactions:

* PUT: Flume's put.  Checks every target channel's capacity in events and in body bytes, then stores and queues
  every message, or does nothing.  One transaction covers all required channels of a source batch; one call
  commits several callers' transactions (group commit), each on its own.
* FETCH: Flume's take.  Pops a tag and records it as in flight in the same step, so a consumer killed at any
  instant leaves the message either queued or in flight (from where RECLAIM returns it), never nowhere.
  kombu's own Redis consumer pops with BRPOP and records the message in a second step, and loses it if killed
  in between.
* ACKFETCH: ACK, then FETCH from one queue, in one call (a sink worker draining its channel).
* ACK: Flume's take commit.  Deletes the message and releases its events and bytes from the channel, but only if
  the caller still holds it (a message reclaimed after its lease expired, maybe taken by another consumer
  since, must not be acknowledged by the first).
* GIVEBACK: Flume's take rollback.  Returns a held message to the front (or back) of its queue.
* TOUCH: renews the leases of held messages (a slow store must not make its message reappear).
* RECLAIM: returns messages whose lease expired (their consumer died) to the front of their queues.
* PURGE: deletes every queued message of a queue and releases what they held.
"""
from core.keys import SHARED_DATA_SUFFIX

# KEYS: message namespace, sizes hash, bytes hash, then per target of every transaction in order: queue, bell
# ARGV: n_transactions, then per transaction: n_targets, then per target: field, capacity, byte_capacity (0: no
#       bound), n_events, n_bytes, n_messages, template id, template envelope, body head, body tail (the template
#       strings may be "" when an earlier target of the call gave the same template), then per message: tag,
#       events, bytes, data, shared (0: the data is this message's own; else the ARGV index of data that several
#       messages of the call carry, given once: data is "" in the others; stored once if large, see the keyspace)
# Returns one result per transaction, in order: {} if it was put, or {field, unit ('events' | 'bytes'), held,
# capacity} of its first channel without room (nothing of that transaction written; the others are unaffected).
INLINE_MAX_BYTES = 1024     # a message whose data is this small is queued whole, in its list item

# Splits a queued small message (see the module docstring) into tag, template id, events, bytes, data.
UNPACK_INLINE = """
local function unpack_inline(item)
  local a = string.find(item, '\0', 2, true)
  local b = string.find(item, '\0', a + 1, true)
  local c = string.find(item, '\0', b + 1, true)
  local d = string.find(item, '\0', c + 1, true)
  return string.sub(item, 2, a - 1), string.sub(item, a + 1, b - 1), string.sub(item, b + 1, c - 1),
         string.sub(item, c + 1, d - 1), string.sub(item, d + 1)
end
"""

PUT = """
local ns, sizes, bytes = KEYS[1], KEYS[2], KEYS[3]
local tns = string.sub(ns, 1, #ns - 4) .. 'tpl:'
local pos, key = 2, 4
local results = {}
local shared = {}     -- ARGV index of shared data -> its key, once stored by this call
for x = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[pos])
  pos = pos + 1
  local targets = {}
  for i = 1, n do
    local t = {queue = KEYS[key], bell = KEYS[key + 1], field = ARGV[pos], capacity = tonumber(ARGV[pos + 1]),
               byte_capacity = tonumber(ARGV[pos + 2]), events = ARGV[pos + 3], bytes = ARGV[pos + 4],
               count = tonumber(ARGV[pos + 5]), template = ARGV[pos + 6], envelope = ARGV[pos + 7],
               head = ARGV[pos + 8], tail = ARGV[pos + 9], first = pos + 10}
    key = key + 2
    pos = t.first + 5 * t.count
    targets[i] = t
    -- templates first: a later transaction of the call may use one given here even if this one has no room
    local tk = tns .. t.template
    if t.envelope ~= '' and redis.call('EXISTS', tk) == 0 then
      redis.call('HSET', tk, 'e', t.envelope, 'h', t.head, 't', t.tail, 'q', t.queue, 's', sizes, 'y', bytes,
                 'f', t.field)
    end
  end
  local full = {}
  for i = 1, n do
    local t = targets[i]
    local size = tonumber(redis.call('HGET', sizes, t.field) or '0')
    if size + tonumber(t.events) > t.capacity then
      full = {t.field, 'events', size, t.capacity}
      break
    end
    if t.byte_capacity > 0 then
      local held = tonumber(redis.call('HGET', bytes, t.field) or '0')
      if held + tonumber(t.bytes) > t.byte_capacity then
        full = {t.field, 'bytes', held, t.byte_capacity}
        break
      end
    end
  end
  if #full == 0 then
    for i = 1, n do
      local t = targets[i]
      for j = t.first, t.first + 5 * (t.count - 1), 5 do
        local tag, data, at = ARGV[j], ARGV[j + 3], tonumber(ARGV[j + 4])
        if at > 0 then
          data = ARGV[at]
        end
        if #data <= $INLINE_MAX_BYTES then
          redis.call('LPUSH', t.queue, '\0' .. tag .. '\0' .. t.template .. '\0' .. ARGV[j + 1] .. '\0' ..
                     ARGV[j + 2] .. '\0' .. data)
        elseif at > 0 then
          local dk = shared[at]
          if not dk then
            dk = ns .. tag .. '$SHARED_DATA_SUFFIX'
            shared[at] = dk
            redis.call('HSET', dk, 'a', data)
          end
          redis.call('HINCRBY', dk, 'r', 1)
          redis.call('HSET', ns .. tag, 'd', dk, 'n', ARGV[j + 1], 'z', ARGV[j + 2], 't', t.template)
          redis.call('LPUSH', t.queue, tag)
        else
          redis.call('HSET', ns .. tag, 'a', data, 'n', ARGV[j + 1], 'z', ARGV[j + 2], 't', t.template)
          redis.call('LPUSH', t.queue, tag)
        end
      end
      redis.call('HINCRBY', sizes, t.field, t.events)
      redis.call('HINCRBY', bytes, t.field, t.bytes)
      if redis.call('LLEN', t.bell) == 0 then
        redis.call('LPUSH', t.bell, '1')
      end
    end
  end
  results[x] = full
end
return results
""".replace("$INLINE_MAX_BYTES", str(INLINE_MAX_BYTES)).replace("$SHARED_DATA_SUFFIX", SHARED_DATA_SUFFIX)

# KEYS: message namespace, in-flight set, then per queue: queue, bell
# ARGV: now, owner, start (rotation of the queue list), max_events[, share token ('' or none: no token)]
# Takes the first message of the first non-empty queue, then more of the same queue while their events still fit
# in max_events (0: just one).  Returns {i, envelope, body, envelope, body, ...} (i: the queue's position in the
# order given, from 1) or nil.  For a compact message, envelope is "\0<template id>\0<tag>\0<events>" and body
# its data (see :meth:`routing.transport.Channel.stored_message`).  With a share token, a message whose data is
# shared has "\0<data key>" after its events; the first time a take with that token meets the data (the token is
# then a field of the shared data hash), also "\0<messages referring to the data>", and its body is the data; else
# its body is "" (:mod:`routing.shared_data`).
FETCH = UNPACK_INLINE + """
local ns, inflight = KEYS[1], KEYS[2]
local nq = (#KEYS - 2) / 2
local budget = tonumber(ARGV[4])
local share = ARGV[5] or ''
for k = 0, nq - 1 do
  local i = 1 + ((tonumber(ARGV[3]) + k) % nq)
  local queue, bell = KEYS[1 + 2 * i], KEYS[2 + 2 * i]
  local out = {i}
  local taken = 0
  while true do
    local item = redis.call('LINDEX', queue, -1)
    if not item then break end
    local tag, message, key
    if string.byte(item, 1) == 0 then
      -- a small message queued whole: it gets its hash now, like any message in flight
      local template, events, size, data
      tag, template, events, size, data = unpack_inline(item)
      message, key = {false, false, events, template, data}, ns .. tag
      if #out > 1 and taken + tonumber(events) > budget then break end
      redis.call('HSET', key, 'a', data, 'n', events, 'z', size, 't', template)
    else
      tag, key = item, ns .. item
      message = redis.call('HMGET', key, 'p', 'b', 'n', 't', 'a', 'd')
      if (message[1] or message[4]) and #out > 1 and taken + tonumber(message[3]) > budget then break end
    end
    redis.call('RPOP', queue)
    if message[1] or message[4] then
      redis.call('HSET', key, 'o', ARGV[2])
      redis.call('ZADD', inflight, ARGV[1], tag)
      if message[1] then
        out[#out + 1] = message[1]
        out[#out + 1] = message[2]
      else
        local envelope = '\0' .. message[4] .. '\0' .. tag .. '\0' .. message[3]
        if message[5] then
          out[#out + 1] = envelope
          out[#out + 1] = message[5]
        elseif share == '' then
          out[#out + 1] = envelope
          out[#out + 1] = redis.call('HGET', message[6], 'a')
        else
          -- shared data, to a taker with a share token: the data the first time this process takes it, else
          -- only its key (the process kept the data, see routing.shared_data)
          if redis.call('HSETNX', message[6], share, '1') == 1 then
            local data = redis.call('HMGET', message[6], 'a', 'r')
            out[#out + 1] = envelope .. '\0' .. message[6] .. '\0' .. data[2]
            out[#out + 1] = data[1]
          else
            out[#out + 1] = envelope .. '\0' .. message[6]
            out[#out + 1] = ''
          end
        end
      end
      taken = taken + tonumber(message[3])
      if taken >= budget then break end
    end
    -- a tag without its message (purged meanwhile) is dropped
  end
  if #out > 1 then
    if redis.call('LLEN', queue) > 0 and redis.call('LLEN', bell) == 0 then
      redis.call('LPUSH', bell, '1')
    end
    return out
  end
end
return nil
"""

# Deletes a message's hash, and the data it shares with others once no other message refers to it.
DELETE_MESSAGE = """
local function delete_message(key, shared)
  redis.call('DEL', key)
  if shared and redis.call('HINCRBY', shared, 'r', -1) <= 0 then
    redis.call('DEL', shared)
  end
end
"""

# KEYS: message namespace, in-flight set
# ARGV: owner, tag...  Acknowledges every listed message this owner holds; returns how many it acknowledged
# (a message no longer held, because its lease expired and it was given back, is left alone).
ACK = DELETE_MESSAGE + """
local tns = string.sub(KEYS[1], 1, #KEYS[1] - 4) .. 'tpl:'
local acked = 0
for i = 2, #ARGV do
  local key = KEYS[1] .. ARGV[i]
  local info = redis.call('HMGET', key, 'o', 's', 'f', 'n', 'y', 'z', 't', 'd')
  if info[1] == ARGV[1] and redis.call('ZREM', KEYS[2], ARGV[i]) == 1 then
    if info[7] then
      local route = redis.call('HMGET', tns .. info[7], 's', 'f', 'y')
      info[2], info[3], info[5] = route[1], route[2], route[3]
    end
    delete_message(key, info[8])
    -- 0 - n, not -n: -0 would reach Redis as '-0', which HINCRBY refuses (bodies may all be empty)
    redis.call('HINCRBY', info[2], info[3], 0 - tonumber(info[4]))
    if info[5] then
      redis.call('HINCRBY', info[5], info[3], 0 - tonumber(info[6]))
    end
    acked = acked + 1
  end
end
return acked
"""

# KEYS: message namespace, in-flight set, queue, bell
# ARGV: now, owner, max_events, share token ('': none), tag...  ACK of the tags, then FETCH (with the share token)
# from the one queue: a sink worker that keeps draining its channel commits one batch and takes the next in one
# call (one round trip, one fsync).  Made of the two scripts above, each run as a function of its own KEYS and
# ARGV.  Returns {acked, envelope, body, ...}.
ACKFETCH = (f"local function ack(KEYS, ARGV)\n{ACK}\nend\n"
            f"local function fetch(KEYS, ARGV)\n{FETCH}\nend\n" """
local tags = {ARGV[2]}
for i = 5, #ARGV do
  tags[#tags + 1] = ARGV[i]
end
local acked = ack({KEYS[1], KEYS[2]}, tags)
local out = fetch(KEYS, {ARGV[1], ARGV[2], 0, ARGV[3], ARGV[4]}) or {0}
out[1] = acked
return out
""")

# KEYS: message namespace, in-flight set
# ARGV: tag, owner, where ('front' | 'back'), bell suffix.  Returns 1 if given back, 0 if not held by this owner.
GIVEBACK = """
local key = KEYS[1] .. ARGV[1]
local info = redis.call('HMGET', key, 'o', 'q', 't')
if info[1] ~= ARGV[2] or redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then
  return 0
end
if info[3] then
  info[2] = redis.call('HGET', string.sub(KEYS[1], 1, #KEYS[1] - 4) .. 'tpl:' .. info[3], 'q')
end
redis.call('HDEL', key, 'o')
if ARGV[3] == 'front' then
  redis.call('RPUSH', info[2], ARGV[1])
else
  redis.call('LPUSH', info[2], ARGV[1])
end
local bell = info[2] .. ARGV[4]
if redis.call('LLEN', bell) == 0 then
  redis.call('LPUSH', bell, '1')
end
return 1
"""

# KEYS: in-flight set
# ARGV: now, tag...  Returns the number of leases renewed (tags no longer in flight are left alone).
TOUCH = """
local renewed = 0
for i = 2, #ARGV do
  renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', ARGV[1], ARGV[i])
end
return renewed
"""

# KEYS: message namespace, in-flight set
# ARGV: leases started before this time are expired, limit, bell suffix.  Returns the number of messages given back.
RECLAIM = """
local tns = string.sub(KEYS[1], 1, #KEYS[1] - 4) .. 'tpl:'
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, tag in ipairs(expired) do
  redis.call('ZREM', KEYS[2], tag)
  local key = KEYS[1] .. tag
  local info = redis.call('HMGET', key, 'q', 't')
  local queue = info[1]
  if info[2] then
    queue = redis.call('HGET', tns .. info[2], 'q')
  end
  if queue then
    redis.call('HDEL', key, 'o')
    redis.call('RPUSH', queue, tag)
    local bell = queue .. ARGV[3]
    if redis.call('LLEN', bell) == 0 then
      redis.call('LPUSH', bell, '1')
    end
  end
end
return #expired
"""

# KEYS: message namespace, queue
# Deletes every queued message of the queue and releases their events and bytes.  Returns the count.
PURGE = UNPACK_INLINE + DELETE_MESSAGE + """
local tns = string.sub(KEYS[1], 1, #KEYS[1] - 4) .. 'tpl:'
local tags = redis.call('LRANGE', KEYS[2], 0, -1)
for _, item in ipairs(tags) do
  local key, info
  if string.byte(item, 1) == 0 then
    local _, template, events, size = unpack_inline(item)
    info = {false, false, events, false, size, template}
  else
    key = KEYS[1] .. item
    info = redis.call('HMGET', key, 's', 'f', 'n', 'y', 'z', 't', 'd')
  end
  if info[6] then
    local route = redis.call('HMGET', tns .. info[6], 's', 'f', 'y')
    info[1], info[2], info[4] = route[1], route[2], route[3]
  end
  if info[1] then
    redis.call('HINCRBY', info[1], info[2], 0 - tonumber(info[3]))   -- 0 - n: see ACK
  end
  if info[4] then
    redis.call('HINCRBY', info[4], info[2], 0 - tonumber(info[5]))
  end
  if key then
    delete_message(key, info[7])
  end
end
redis.call('DEL', KEYS[2])
return #tags
"""
