//! The Lua scripts: every write is one script, so a lifecycle change, its audit event and
//! its change events are applied together or not at all, whatever other gateways and CLIs
//! do meanwhile.
//!
//! Redis does not roll a script back when a command in it fails: what it wrote before
//! stays. So each write script makes every check (compare-and-set versions, hash
//! uniqueness, the feed position) before its first write, and past that point only
//! commands that cannot fail on keys of the right type run.
//!
//! Every script names one key (`KEYS[1]`) so a cluster client routes it to the `{kg}`
//! slot; the other keys it touches share that slot (see the layout in `store::redis`).

use ::redis::Script;
use std::sync::LazyLock;

/// ARGV[1] is the key prefix (`{kg}:`) in every script.
const COMMON: &str = r#"
local P = ARGV[1]
local function user_key(org, user)
  return P .. 'user:' .. string.len(org) .. ':' .. org .. ':' .. user
end
local function owner_key(org, user)
  return P .. 'owner:' .. string.len(org) .. ':' .. org .. ':' .. user
end
local function org_state_key(org)
  return P .. 'org-state:' .. org
end
"#;

/// Writers: ARGV[2] is the stream's approximate MAXLEN.
const FEED: &str = r#"
local MAXLEN = ARGV[2]
local EVENTS = P .. 'events'
local SEQ = P .. 'events:seq'

-- The sequence number of the last event. The stream's own last id wins when the counter is
-- behind it (lost, or restored apart from the stream), since XADD refuses an id at or
-- below the stream's last one. Called before the first write.
local seq = nil
local function open_feed()
  -- The feed's epoch: set by the first write to an empty Redis, so a reader can tell a
  -- Redis that lost its data (and counts from 1 again) from the one it was following.
  if redis.call('EXISTS', P .. 'events:epoch') == 0 then
    local t = redis.call('TIME')
    redis.call('SET', P .. 'events:epoch', t[1] .. '.' .. t[2])
  end
  seq = tonumber(redis.call('GET', SEQ)) or 0
  if redis.call('EXISTS', EVENTS) == 1 then
    local info = redis.call('XINFO', 'STREAM', EVENTS)
    for i = 1, #info - 1, 2 do
      if info[i] == 'last-generated-id' then
        local top = tonumber(string.match(info[i + 1], '^(%d+)-')) or 0
        if top > seq then seq = top end
      end
    end
  end
end

-- One change event: `hash` is a key hash in hex, or '*' (every gateway drops everything);
-- `at` is when it was written (unix ms, Redis's clock), for the readers' lag metric.
local at = nil
local function publish(hash)
  seq = seq + 1
  local s = string.format('%d', seq)
  if not at then
    local t = redis.call('TIME')
    at = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  end
  redis.call('XADD', EVENTS, 'MAXLEN', '~', MAXLEN, s .. '-1', 'hash', hash, 'at', at)
  redis.call('SET', SEQ, s)
end

-- One change event per key of `ids` that still exists (a user's or an org's keys).
local function publish_keys(ids)
  for _, id in ipairs(ids) do
    local hash = redis.call('HGET', P .. 'key:' .. id, 'hash')
    if hash then
      publish(hash)
    end
  end
end

local function append_audit(json, has_key, key_id)
  local id = redis.call('INCR', P .. 'audit:seq')
  redis.call('HSET', P .. 'audit:events', id, json)
  redis.call('ZADD', P .. 'audit', id, id)
  if has_key == '1' then
    redis.call('ZADD', P .. 'audit:key:' .. key_id, id, id)
  end
end
"#;

/// ARGV[3]: number of keys, then per key `KEY_ARGS` values (id, read version, hash hex,
/// org, has owner, owner, created_at, last_used_at or '', record JSON), then the number of
/// events and per event 3 values (JSON, has key id, key id).
/// Returns `{'ok'}`, `{'conflict', id}` or `{'hash_taken', id, holder}`.
const SAVE_KEYS: &str = r#"
local KF = 9
local nk = tonumber(ARGV[3])
local at = 4
local versions = {}
local claimed = {}
for k = 0, nk - 1 do
  local a = at + k * KF
  local id, read, hash = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2]
  local stored = versions[id]
  if stored == nil then
    stored = tonumber(redis.call('HGET', P .. 'key:' .. id, 'version')) or 0
  end
  if read ~= 0 and read ~= stored then
    return {'conflict', id}
  end
  versions[id] = stored + 1
  local holder = claimed[hash]
  if holder == nil then
    holder = redis.call('GET', P .. 'hash:' .. hash)
    -- An index entry whose key is gone or has another hash now holds nothing.
    if holder and holder ~= id and redis.call('HGET', P .. 'key:' .. holder, 'hash') ~= hash then
      holder = false
    end
  end
  if holder and holder ~= id then
    return {'hash_taken', id, holder}
  end
  claimed[hash] = id
end
open_feed()
for k = 0, nk - 1 do
  local a = at + k * KF
  local id, hash, org = ARGV[a], ARGV[a + 2], ARGV[a + 3]
  local has_owner, owner = ARGV[a + 4], ARGV[a + 5]
  local created, used, record = ARGV[a + 6], ARGV[a + 7], ARGV[a + 8]
  local kk = P .. 'key:' .. id
  local old = redis.call('HMGET', kk, 'hash', 'org', 'owner', 'version', 'last_used_at')
  -- Hashes never change in practice, but if a caller did change one, the old hash's
  -- cached answers must go too.
  if old[1] and old[1] ~= hash then
    if redis.call('GET', P .. 'hash:' .. old[1]) == id then
      redis.call('DEL', P .. 'hash:' .. old[1])
    end
    publish(old[1])
  end
  if old[2] and old[2] ~= org then
    redis.call('ZREM', P .. 'org:' .. old[2], id)
  end
  if old[2] and old[3] and (has_owner == '0' or old[2] ~= org or old[3] ~= owner) then
    redis.call('SREM', owner_key(old[2], old[3]), id)
  end
  -- last_used_at belongs to record_last_used, which may have written a newer time since
  -- the caller read this record: keep the later of the two.
  local last = used
  local prev, new = tonumber(old[5]), tonumber(used)
  if prev and (new == nil or prev > new) then
    last = old[5]
  end
  local version = string.format('%d', (tonumber(old[4]) or 0) + 1)
  redis.call('HSET', kk, 'record', record, 'hash', hash, 'org', org,
    'created_at', created, 'version', version)
  if has_owner == '1' then
    redis.call('HSET', kk, 'owner', owner)
  else
    redis.call('HDEL', kk, 'owner')
  end
  if last ~= '' then
    redis.call('HSET', kk, 'last_used_at', last)
  else
    redis.call('HDEL', kk, 'last_used_at')
  end
  redis.call('SET', P .. 'hash:' .. hash, id)
  redis.call('ZADD', P .. 'org:' .. org, created, id)
  redis.call('ZADD', P .. 'all', created, id)
  if has_owner == '1' then
    redis.call('SADD', owner_key(org, owner), id)
  end
  publish(hash)
end
local ne_at = at + nk * KF
local ne = tonumber(ARGV[ne_at])
for e = 0, ne - 1 do
  local a = ne_at + 1 + e * 3
  append_audit(ARGV[a], ARGV[a + 1], ARGV[a + 2])
end
return {'ok'}
"#;

/// ARGV[3]: key id; ARGV[4..6]: the audit event (JSON, has key id, key id).
/// Returns 1, or 0 (no such key: nothing written).
const DELETE_KEY: &str = r#"
local id = ARGV[3]
local kk = P .. 'key:' .. id
if redis.call('EXISTS', kk) == 0 then
  return 0
end
open_feed()
local f = redis.call('HMGET', kk, 'hash', 'org', 'owner')
redis.call('DEL', kk)
if f[1] and redis.call('GET', P .. 'hash:' .. f[1]) == id then
  redis.call('DEL', P .. 'hash:' .. f[1])
end
if f[2] then
  redis.call('ZREM', P .. 'org:' .. f[2], id)
end
redis.call('ZREM', P .. 'all', id)
if f[2] and f[3] then
  redis.call('SREM', owner_key(f[2], f[3]), id)
end
-- A key without a hash to name: every gateway drops everything instead.
publish(f[1] or '*')
append_audit(ARGV[4], ARGV[5], ARGV[6])
return 1
"#;

/// ARGV[3..4]: org, user; ARGV[5]: read version; ARGV[6..8]: removed ('0'/'1'), roles
/// JSON, permissions JSON; ARGV[9..11]: the audit event. Returns `{'ok'}` or `{'conflict'}`.
const SAVE_USER: &str = r#"
local org, user = ARGV[3], ARGV[4]
local uk = user_key(org, user)
local stored = tonumber(redis.call('HGET', uk, 'version')) or 0
local read = tonumber(ARGV[5])
if read ~= 0 and read ~= stored then
  return {'conflict'}
end
local owned = redis.call('SMEMBERS', owner_key(org, user))
open_feed()
redis.call('HSET', uk, 'removed', ARGV[6], 'roles', ARGV[7], 'permissions', ARGV[8],
  'version', string.format('%d', stored + 1))
-- Every answer for a key the user owns embeds the user's state.
publish_keys(owned)
append_audit(ARGV[9], ARGV[10], ARGV[11])
return {'ok'}
"#;

/// ARGV[3]: org; ARGV[4]: read version (0: none stored); ARGV[5]: suspended ('0'/'1');
/// ARGV[6..8]: the audit event; ARGV[9]: the most change events worth publishing one by
/// one. Returns `{'ok'}` or `{'conflict'}`.
const SAVE_ORG: &str = r#"
local org = ARGV[3]
local ok = org_state_key(org)
local stored = tonumber(redis.call('HGET', ok, 'version')) or 0
-- Strict, 0 included: of two first suspensions racing, one conflicts.
if tonumber(ARGV[4]) ~= stored then
  return {'conflict'}
end
local ids = redis.call('ZRANGE', P .. 'org:' .. org, 0, -1)
open_feed()
redis.call('HSET', ok, 'suspended', ARGV[5], 'version', string.format('%d', stored + 1))
-- Every answer for a key of the org embeds the org's state. Past what a reader takes in
-- one batch it would drop its whole cache anyway: say so in one event, and keep this
-- script (which holds Redis) short.
if #ids > tonumber(ARGV[9]) then
  publish('*')
else
  publish_keys(ids)
end
append_audit(ARGV[6], ARGV[7], ARGV[8])
return {'ok'}
"#;

/// ARGV[3..]: pairs of key id and unix-ms time. No change event and no audit: when a key
/// was last used changes no verdict.
const RECORD_LAST_USED: &str = r#"
for i = 3, #ARGV - 1, 2 do
  local kk = P .. 'key:' .. ARGV[i]
  if redis.call('EXISTS', kk) == 1 then
    local prev = tonumber(redis.call('HGET', kk, 'last_used_at'))
    local at = tonumber(ARGV[i + 1])
    if at and (prev == nil or at > prev) then
      redis.call('HSET', kk, 'last_used_at', ARGV[i + 1])
    end
  end
end
return 0
"#;

/// KEYS[1]: `{kg}:hash:<hex>`. Returns nil (no such hash), `{id}` (an index entry without
/// its key), or `{id, key fields, owner fields, org suspended ('0'/'1')}`: the owner's
/// hash and the org's state come from the same snapshot as the key, so a verdict never
/// mixes two moments, and a lookup stays one round trip.
const LOOKUP: &str = r#"
local id = redis.call('GET', KEYS[1])
if not id then
  return false
end
local key = redis.call('HGETALL', P .. 'key:' .. id)
if #key == 0 then
  return {id}
end
local org, owner
for i = 1, #key - 1, 2 do
  if key[i] == 'org' then
    org = key[i + 1]
  elseif key[i] == 'owner' then
    owner = key[i + 1]
  end
end
local user = {}
if org and owner then
  user = redis.call('HGETALL', user_key(org, owner))
end
local suspended = '0'
if org and redis.call('HGET', org_state_key(org), 'suspended') == '1' then
  suspended = '1'
end
return {id, key, user, suspended}
"#;

/// KEYS[1]: the index (`{kg}:audit` or `{kg}:audit:key:<id>`); ARGV[2]: the highest score
/// (`+inf` or `(<before>`); ARGV[3]: the limit. Returns id, JSON pairs, newest first; a
/// missing JSON comes back as '' (and is reported as corrupt).
const AUDIT: &str = r#"
local ids = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[2], '-inf', 'LIMIT', 0, ARGV[3])
local out = {}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', P .. 'audit:events', id) or ''
end
return out
"#;

/// KEYS[1]: the key's quota hash (`epoch`, `period`, `leased`, `used`); ARGV[2..3]: the
/// caller's tag (epoch, period); ARGV[4]: how many it wants; ARGV[5]: the quota; ARGV[6]:
/// when the period's counters may go (unix ms, 0: never). A stored tag newer than the
/// caller's wins (the grant is of it); an older one is replaced by the caller's, from zero.
/// Returns `{granted, leased, epoch, period}`.
const LEASE_QUOTA: &str = r#"
local k = KEYS[1]
local e, p = tonumber(ARGV[2]), tonumber(ARGV[3])
local want, limit = tonumber(ARGV[4]), tonumber(ARGV[5])
local s = redis.call('HMGET', k, 'epoch', 'period', 'leased', 'used')
local se, sp = tonumber(s[1]), tonumber(s[2])
local leased, used = 0, 0
local newer = se and (se > e or (se == e and sp > p))
if se and (newer or (se == e and sp == p)) then
  e, p = se, sp
  leased, used = tonumber(s[3]) or 0, tonumber(s[4]) or 0
end
local grant = math.max(0, math.min(want, limit - leased))
leased = leased + grant
redis.call('HSET', k, 'epoch', string.format('%d', e), 'period', string.format('%d', p),
  'leased', string.format('%d', leased), 'used', string.format('%d', used))
if not newer and tonumber(ARGV[6]) > 0 then
  redis.call('PEXPIREAT', k, ARGV[6])
end
return {grant, leased, string.format('%d', e), string.format('%d', p)}
"#;

/// ARGV[2]: the number of reports, then 5 values each (key id, epoch, period, used,
/// release). A report of another tag than the stored one is dropped.
const SETTLE_QUOTA: &str = r#"
local n = tonumber(ARGV[2])
for i = 0, n - 1 do
  local a = 3 + i * 5
  local k = P .. 'quota:' .. ARGV[a]
  local s = redis.call('HMGET', k, 'epoch', 'period', 'leased')
  if s[1] == ARGV[a + 1] and s[2] == ARGV[a + 2] then
    redis.call('HINCRBY', k, 'used', ARGV[a + 3])
    local left = (tonumber(s[3]) or 0) - tonumber(ARGV[a + 4])
    if left < 0 then left = 0 end
    redis.call('HSET', k, 'leased', string.format('%d', left))
  end
end
return n
"#;

/// KEYS[1]: the key's rate-window base name (`{kg}:rate:<id>:<window ms>`, one counter per
/// window index after it); ARGV[2..4]: limit, window ms, how many the caller wants.
///
/// A sliding window on Redis's clock: the previous window's count weighs by the share of
/// it still inside the last `window` ms. Returns `{granted, remaining, ms left in this
/// window, ms until one request frees (when none was granted)}`.
const LEASE_RATE: &str = r#"
local base = KEYS[1]
local limit, w, want = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local idx = math.floor(now / w)
local into = now - idx * w
local frac = into / w
local cur_k = base .. ':' .. string.format('%d', idx)
local cur = tonumber(redis.call('GET', cur_k)) or 0
local prev = tonumber(redis.call('GET', base .. ':' .. string.format('%d', idx - 1))) or 0
local free = limit - (math.floor(prev * (1 - frac)) + cur)
local grant = 0
if free > 0 then grant = math.min(want, free) end
if grant > 0 then
  redis.call('INCRBY', cur_k, grant)
  redis.call('PEXPIRE', cur_k, 2 * w + 1000)
end
local left = w - into
local retry = 0
if grant == 0 then
  local need = limit - 1 - cur
  if need >= 0 and prev > 0 then
    retry = math.max(1, math.ceil((1 - need / prev - frac) * w))
  else
    local f = 0
    if cur > 0 then f = math.max(0, 1 - (limit - 1) / cur) end
    retry = left + math.ceil(f * w)
  end
end
return {grant, math.max(0, free - grant), left, retry}
"#;

fn writer(body: &str) -> Script {
    Script::new(&format!("{COMMON}{FEED}{body}"))
}

fn reader(body: &str) -> Script {
    Script::new(&format!("{COMMON}{body}"))
}

/// Values per key in `save_keys`' arguments.
pub(super) const KEY_ARGS: usize = 9;

pub(super) static SAVE_KEYS_SCRIPT: LazyLock<Script> = LazyLock::new(|| writer(SAVE_KEYS));
pub(super) static DELETE_KEY_SCRIPT: LazyLock<Script> = LazyLock::new(|| writer(DELETE_KEY));
pub(super) static SAVE_USER_SCRIPT: LazyLock<Script> = LazyLock::new(|| writer(SAVE_USER));
pub(super) static SAVE_ORG_SCRIPT: LazyLock<Script> = LazyLock::new(|| writer(SAVE_ORG));
pub(super) static RECORD_LAST_USED_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| writer(RECORD_LAST_USED));
pub(super) static LOOKUP_SCRIPT: LazyLock<Script> = LazyLock::new(|| reader(LOOKUP));
pub(super) static AUDIT_SCRIPT: LazyLock<Script> = LazyLock::new(|| reader(AUDIT));
pub(super) static LEASE_QUOTA_SCRIPT: LazyLock<Script> = LazyLock::new(|| reader(LEASE_QUOTA));
pub(super) static SETTLE_QUOTA_SCRIPT: LazyLock<Script> = LazyLock::new(|| reader(SETTLE_QUOTA));
pub(super) static LEASE_RATE_SCRIPT: LazyLock<Script> = LazyLock::new(|| reader(LEASE_RATE));
