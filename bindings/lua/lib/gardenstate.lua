-- gardenstate: LuaJIT FFI binding of libgardenstate (include/gardenstate.h), for
-- OpenResty / lua-nginx-module and plain LuaJIT.
--
-- Loading order (the first that applies wins; a named file that fails to load is an error,
-- never a silent fallback):
--   1. the file named by the environment variable GARDENSTATE_LIB;
--   2. the path given to gardenstate.load(path) (or set as gardenstate.lib_path before the
--      first call);
--   3. the system loader: libgardenstate.so.<GDS_ABI_VERSION> (the SONAME), then
--      libgardenstate.so.
-- Before any other symbol is used, gds_abi_version() must equal GDS_ABI_VERSION below (the
-- header's); otherwise loading fails and nothing else is called.
--
-- Errors are returned Lua-style: nil, message, code (message from gds_last_error_message()
-- for errors, gds_strerror() for outcomes such as "not found").
local ffi = require("ffi")
local C_NULL = nil

local M = { _VERSION = "0.1.0" }

-- Constants of include/gardenstate.h (checked against the header by tests/check_cdef.py).
M.GDS_ABI_VERSION = 1
M.GDS_EXPIRY_NEVER = 0
local TTL_NEVER = 0xFFFFFFFFFFFFFFFFULL -- GDS_TTL_NEVER (UINT64_MAX)
M.GDS_EXPIRY_AFTER = 1
M.GDS_EXPIRY_SLIDING = 2
M.GDS_ROLE_PRIMARY = 0
M.GDS_ROLE_STANDBY = 1
M.GDS_ROLE_FENCED = 2
M.GDS_ROLE_LEASE_LAPSED = 3
local ROLE_NAMES = { [0] = "primary", "standby", "fenced", "lease_lapsed" }
M.status = {
    GDS_OK = 0, GDS_NOT_FOUND = 1, GDS_FEED_EMPTY = 2, GDS_FEED_PENDING = 3,
    GDS_ERR_EXISTS = 10, GDS_ERR_VERSION_MISMATCH = 11, GDS_ERR_LOCKED = 12,
    GDS_ERR_LOCK_MISMATCH = 13, GDS_ERR_READ_ONLY = 14,
    GDS_ERR_FULL_INDEX = 20, GDS_ERR_FULL_HEAP = 21, GDS_ERR_FULL_CLIENTS = 22,
    GDS_ERR_KEY_LENGTH = 23, GDS_ERR_VALUE_LENGTH = 24, GDS_ERR_BUFFER_TOO_SMALL = 25,
    GDS_ERR_FEED_OVERFLOW = 26, GDS_ERR_IO = 30, GDS_ERR_SEGMENT_EXISTS = 31,
    GDS_ERR_NO_SEGMENT = 32, GDS_ERR_PERMISSION = 33, GDS_ERR_INCOMPATIBLE = 34,
    GDS_ERR_CORRUPT = 35, GDS_ERR_NOT_READY = 36, GDS_ERR_INVALID_OPTIONS = 37,
    GDS_ERR_REFUSED = 38, GDS_ERR_DESTROYED = 39, GDS_ERR_NULL_ARGUMENT = 40,
    GDS_ERR_INVALID_ARGUMENT = 41,
    GDS_ERR_PANIC = 42, GDS_ERR_OUT_OF_MEMORY = 43, GDS_ERR_UNKNOWN = 49,
}
local S = M.status

-- Only the version query is declared before the ABI check; the rest after it.
-- Each declaration below is copied verbatim (comments dropped) from include/gardenstate.h;
-- tests/check_cdef.py fails if one no longer appears in the header.
local CDEF_ABI = [[
uint32_t gds_abi_version(void);
]]

local CDEF = [[
typedef int32_t gds_status;
typedef struct gds_store gds_store;
typedef uint32_t gds_expiry_kind;
typedef struct gds_options {
    uint64_t struct_size;
    uint64_t capacity_bytes;
    uint64_t max_entries;
    uint64_t max_value;
    uint64_t feed_len;
    uint32_t max_key;
    uint32_t max_clients;
    uint32_t mode;
    uint32_t flags;
} gds_options;
typedef struct gds_info {
    uint64_t struct_size;
    uint64_t segment_bytes;
    uint64_t heap_bytes;
    uint64_t page_size;
    uint64_t max_entries;
    uint64_t index_slots;
    uint64_t max_key;
    uint64_t max_value;
    uint64_t max_clients;
    uint64_t feed_len;
    uint64_t dataset_id;
    uint64_t flags;
} gds_info;
typedef uint32_t gds_role;
typedef struct gds_replication_state {
    uint64_t struct_size;
    uint64_t epoch;
    uint64_t changes;
    gds_role role;
    uint32_t reserved;
} gds_replication_state;
typedef struct gds_meta {
    uint64_t version;
    uint64_t value_len;
    uint64_t ttl_left_ms;
    uint64_t lock_id;
    uint64_t lock_age_ms;
} gds_meta;
typedef struct gds_lock_info {
    uint64_t lock_id;
    uint64_t age_ms;
    uint32_t took_over;
    uint32_t reserved;
} gds_lock_info;
typedef struct gds_stats {
    uint64_t struct_size;
    uint64_t live_entries;
    uint64_t bytes_used;
    uint64_t bytes_free;
    uint64_t hits;
    uint64_t misses;
    uint64_t sets;
    uint64_t deletes;
    uint64_t expirations;
    uint64_t evictions;
    uint64_t touches;
    uint64_t locks;
    uint64_t lock_contentions;
    uint64_t lock_takeovers;
    uint64_t dead_reclaims;
    uint64_t sweeps;
    uint64_t clients;
    uint64_t feed_head;
} gds_stats;
const char *gds_version(void);
const char *gds_strerror(int32_t status);
const char *gds_last_error_message(void);
gds_status gds_create(const char *name,
                      const struct gds_options *opts,
                      struct gds_store **store_out);
gds_status gds_open(const char *name,
                    const struct gds_options *opts,
                    struct gds_store **store_out);
gds_status gds_attach(const char *name,
                      struct gds_store **store_out);
gds_status gds_attach_group(const char *name,
                            struct gds_store **store_out);
void gds_close(struct gds_store *store);
gds_status gds_destroy(const char *name);
gds_status gds_get_info(const struct gds_store *store,
                        struct gds_info *info_out);
gds_status gds_get_replication_state(const struct gds_store *store,
                                     struct gds_replication_state *state_out);
gds_status gds_get(const struct gds_store *store,
                   const uint8_t *key,
                   size_t key_len,
                   uint8_t *buf,
                   size_t buf_len,
                   size_t *value_len_out,
                   struct gds_meta *meta_out);
gds_status gds_set(const struct gds_store *store,
                   const uint8_t *key,
                   size_t key_len,
                   const uint8_t *value,
                   size_t value_len,
                   gds_expiry_kind expiry,
                   uint64_t ttl_ms,
                   uint64_t *version_out);
gds_status gds_add(const struct gds_store *store,
                   const uint8_t *key,
                   size_t key_len,
                   const uint8_t *value,
                   size_t value_len,
                   gds_expiry_kind expiry,
                   uint64_t ttl_ms,
                   uint64_t *version_out);
gds_status gds_delete(const struct gds_store *store,
                      const uint8_t *key,
                      size_t key_len);
gds_status gds_touch(const struct gds_store *store,
                     const uint8_t *key,
                     size_t key_len,
                     gds_expiry_kind expiry,
                     uint64_t ttl_ms);
gds_status gds_lock(const struct gds_store *store,
                    const uint8_t *key,
                    size_t key_len,
                    uint64_t takeover_after_ms,
                    uint8_t **value_out,
                    size_t *value_len_out,
                    struct gds_meta *meta_out,
                    struct gds_lock_info *lock_out);
gds_status gds_lock_wait(const struct gds_store *store,
                         const uint8_t *key,
                         size_t key_len,
                         uint64_t takeover_after_ms,
                         uint64_t timeout_ms,
                         uint8_t **value_out,
                         size_t *value_len_out,
                         struct gds_meta *meta_out,
                         struct gds_lock_info *lock_out);
gds_status gds_unlock(const struct gds_store *store,
                      const uint8_t *key,
                      size_t key_len,
                      uint64_t lock_id);
gds_status gds_set_and_unlock(const struct gds_store *store,
                              const uint8_t *key,
                              size_t key_len,
                              uint64_t lock_id,
                              const uint8_t *value,
                              size_t value_len,
                              gds_expiry_kind expiry,
                              uint64_t ttl_ms,
                              uint64_t *version_out);
gds_status gds_get_stats(const struct gds_store *store,
                         struct gds_stats *stats_out);
void gds_buffer_free(void *buf);
]]
M._CDEF_ABI = CDEF_ABI
M._CDEF = CDEF

local lib -- the loaded library, once load() succeeded
-- The reusable read buffer (one per Lua VM: an nginx worker has one), grown on demand, and
-- the output cells of the data path; allocated by load(), once the types are declared.
local buf_len, buf, len_out, meta_out, ver_out

local function try_load(path)
    local ok, l = pcall(ffi.load, path)
    if ok then return l end
    return nil, l
end

-- Loads and checks the library. Returns true, or nil, message. Idempotent.
function M.load(path)
    if lib then return true end
    local env = os.getenv("GARDENSTATE_LIB")
    local l, err
    if env and env ~= "" then
        l, err = try_load(env)
        if not l then return nil, "gardenstate: cannot load GARDENSTATE_LIB=" .. env .. ": " .. tostring(err) end
    elseif path or M.lib_path then
        local p = path or M.lib_path
        l, err = try_load(p)
        if not l then return nil, "gardenstate: cannot load " .. p .. ": " .. tostring(err) end
    else
        l, err = try_load("libgardenstate.so." .. M.GDS_ABI_VERSION)
        if not l then
            local err2
            l, err2 = try_load("libgardenstate.so")
            if not l then
                return nil, "gardenstate: libgardenstate not found by the system loader ("
                    .. tostring(err) .. "; " .. tostring(err2)
                    .. "); set GARDENSTATE_LIB or pass a path to gardenstate.load()"
            end
        end
    end
    -- The ABI check comes before any other call. ffi.cdef is process-global, so a second
    -- copy of this module (or another binding) declaring the same names is tolerated.
    pcall(ffi.cdef, CDEF_ABI)
    local abi = tonumber(l.gds_abi_version())
    if abi ~= M.GDS_ABI_VERSION then
        return nil, string.format("gardenstate: the library has ABI version %d, this binding "
            .. "was written for %d; use a matching libgardenstate", abi, M.GDS_ABI_VERSION)
    end
    pcall(ffi.cdef, CDEF)
    buf_len = 4096
    buf = ffi.new("uint8_t[?]", buf_len)
    len_out = ffi.new("size_t[1]")
    meta_out = ffi.new("gds_meta")
    ver_out = ffi.new("uint64_t[1]")
    lib = l
    M.lib = l
    return true
end

local function need_lib()
    if lib then return true end
    local ok, err = M.load()
    if not ok then return nil, err end
    return true
end

-- nil, message, code for a status that is not GDS_OK.
local function fail(rc)
    rc = tonumber(rc)
    local msg
    if rc >= 10 then
        msg = ffi.string(lib.gds_last_error_message())
    else
        msg = ffi.string(lib.gds_strerror(rc))
    end
    return nil, msg, rc
end
M._fail = fail

function M.strerror(code)
    assert(need_lib())
    return ffi.string(lib.gds_strerror(code))
end

function M.version()
    local ok, err = need_lib()
    if not ok then return nil, err end
    return ffi.string(lib.gds_version())
end

local Store = {}
Store.__index = Store
M.Store = Store

local OPTION_FIELDS = { "capacity_bytes", "max_entries", "max_value", "feed_len",
    "max_key", "max_clients", "mode", "flags" }

-- Only the options the caller gives are set; the others stay 0, which the library reads as
-- "not given" (its default when it creates the segment).
local function make_options(opts)
    local o = ffi.new("gds_options")
    o.struct_size = ffi.sizeof("gds_options")
    if opts then
        for k, v in pairs(opts) do
            local known = false
            for _, f in ipairs(OPTION_FIELDS) do if f == k then known = true end end
            if not known then
                return nil, "gardenstate: unknown option " .. tostring(k), S.GDS_ERR_INVALID_ARGUMENT
            end
            o[k] = v
        end
    end
    return o
end

local function wrap(handle, name)
    -- The handle is closed when the Store is collected, or by store:close().
    local h = ffi.gc(handle, lib.gds_close)
    return setmetatable({ _h = h, name = name }, Store)
end

local function open_with(fn, name, opts)
    local ok, err = need_lib()
    if not ok then return nil, err, S.GDS_ERR_INVALID_ARGUMENT end
    if type(name) ~= "string" then
        return nil, "gardenstate: segment name must be a string", S.GDS_ERR_INVALID_ARGUMENT
    end
    local out = ffi.new("gds_store *[1]")
    local rc
    if fn == "attach" or fn == "attach_group" then
        rc = lib["gds_" .. fn](name, out)
    else
        local o, e, c = make_options(opts)
        if not o then return nil, e, c end
        rc = lib["gds_" .. fn](name, o, out)
    end
    if rc ~= 0 then return fail(rc) end
    return wrap(out[0], name)
end

-- open(name, opts): attach, or create with opts if absent (only the options given are
-- checked against an existing segment). create(name, opts): only create.
-- attach(name): only attach an existing segment of this user. attach_group(name): also a
-- 0660 segment of another user of one of this process's groups (nginx workers running as
-- nobody, the segment created by root or an operator with `gardenstate create --group`).
function M.open(name, opts) return open_with("open", name, opts) end
function M.create(name, opts) return open_with("create", name, opts) end
function M.attach(name) return open_with("attach", name) end
function M.attach_group(name) return open_with("attach_group", name) end

-- lazy(name, [opts]) -> a handle that attaches on first use and again after a failure: what
-- nginx's init_worker_by_lua keeps, so a segment missing or refused when the worker starts
-- (created later, its permissions fixed later) is picked up by a later request, and the
-- failure is logged once, not per request. lazy:store() -> store | nil, message, code.
-- opts (all optional):
--   create    table of creation options: create-or-attach (open) with exactly these;
--             without it, attach only (the segment is made by root or an operator)
--   group     attach with attach_group (default true; false: attach, own segments only)
--   retry_ms  the least time between two attempts after a failure (default 1000; a
--             segment whose creator died mid-creation, GDS_ERR_NOT_READY, makes an attempt
--             wait 5 s, so then it is retried every 60 s)
local Lazy = {}
Lazy.__index = Lazy
M.Lazy = Lazy

local LAZY_OPTIONS = { create = "table", group = "boolean", retry_ms = "number" }

local function now_ms()
    if ngx then return ngx.now() * 1000 end
    return os.time() * 1000
end

local function log(level, msg)
    if ngx and ngx.log then ngx.log(ngx[level], msg) else io.stderr:write(msg, "\n") end
end

function M.lazy(name, opts)
    if type(name) ~= "string" then error("gardenstate.lazy: segment name must be a string", 2) end
    opts = opts or {}
    for k, v in pairs(opts) do
        if LAZY_OPTIONS[k] == nil or type(v) ~= LAZY_OPTIONS[k] then
            error("gardenstate.lazy: option " .. tostring(k) .. " must be one of create (table), "
                .. "group (boolean), retry_ms (number)", 2)
        end
    end
    local self = setmetatable({ name = name, create = opts.create, group = opts.group ~= false,
        retry_ms = opts.retry_ms or 1000, next_try = 0, failures = 0 }, Lazy)
    self:store() -- the first attempt now (in init_worker: the failure is logged at start-up)
    return self
end

function Lazy:store()
    local s = self._store
    if s then return s end
    local t = now_ms()
    if t < self.next_try then return nil, self.err, self.code end
    local err, code
    if self.create then
        s, err, code = M.open(self.name, self.create)
    elseif self.group then
        s, err, code = M.attach_group(self.name)
    else
        s, err, code = M.attach(self.name)
    end
    if s then
        if self.failures > 0 then
            log("NOTICE", string.format("gardenstate: segment \"%s\" attached after %d failed "
                .. "attempt(s); requests are served again", self.name, self.failures))
        end
        self._store, self.failures, self.err, self.code = s, 0, nil, nil
        return s
    end
    self.failures = self.failures + 1
    if self.failures == 1 or code ~= self.code then
        log("ERR", string.format("gardenstate: segment \"%s\" unavailable (code %s): %s; requests "
            .. "that need it get 503 until it can be attached (retried at most every %d ms, "
            .. "logged again only if the reason changes)", self.name, tostring(code),
            tostring(err), code == S.GDS_ERR_NOT_READY and 60000 or self.retry_ms))
    end
    self.err, self.code = err, code
    self.next_try = t + (code == S.GDS_ERR_NOT_READY and 60000 or self.retry_ms)
    return nil, err, code
end

-- destroy(name): removes the segment file. true, or nil, message, code (code 1: absent).
function M.destroy(name)
    local ok, err = need_lib()
    if not ok then return nil, err end
    local rc = lib.gds_destroy(name)
    if rc ~= 0 then return fail(rc) end
    return true
end

function Store:close()
    if self._h ~= nil then
        local h = self._h
        self._h = nil
        ffi.gc(h, nil)
        lib.gds_close(h)
    end
    return true
end

local function handle(self)
    local h = self._h
    if h == nil then error("gardenstate: store used after close()", 3) end
    return h
end

local function check_str(s, what)
    if type(s) ~= "string" then
        error("gardenstate: " .. what .. " must be a string, got " .. type(s), 3)
    end
end

-- Expiry from a ttl (milliseconds, nil/0 = never) and sliding flag.
local function expiry_of(ttl_ms, sliding)
    if ttl_ms == nil or ttl_ms == 0 then return M.GDS_EXPIRY_NEVER, 0 end
    if type(ttl_ms) ~= "number" or ttl_ms < 0 then
        error("gardenstate: ttl_ms must be a non-negative number", 3)
    end
    return sliding and M.GDS_EXPIRY_SLIDING or M.GDS_EXPIRY_AFTER, ttl_ms
end


local function meta_table(m)
    local ttl = m.ttl_left_ms -- GDS_TTL_NEVER (UINT64_MAX) becomes nil
    if ttl == TTL_NEVER then ttl = nil else ttl = tonumber(ttl) end
    return {
        version = tonumber(m.version),
        value_len = tonumber(m.value_len),
        ttl_left_ms = ttl,
        lock_id = tonumber(m.lock_id),
        lock_age_ms = tonumber(m.lock_age_ms),
    }
end

-- get(key) -> value, meta   | nil, message, code (code 1 = not found)
function Store:get(key)
    local h = handle(self)
    check_str(key, "key")
    while true do
        local rc = lib.gds_get(h, key, #key, buf, buf_len, len_out, meta_out)
        if rc == 0 then
            return ffi.string(buf, len_out[0]), meta_table(meta_out)
        elseif rc == S.GDS_ERR_BUFFER_TOO_SMALL then
            -- len_out holds the size needed; the value may grow again before the retry.
            local need = tonumber(len_out[0])
            local n = buf_len
            while n < need do n = n * 2 end
            buf = ffi.new("uint8_t[?]", n)
            buf_len = n
        else
            return fail(rc)
        end
    end
end

local function write(fn, self, key, value, ttl_ms, sliding)
    local h = handle(self)
    check_str(key, "key")
    check_str(value, "value")
    local kind, ttl = expiry_of(ttl_ms, sliding)
    local rc = fn(h, key, #key, value, #value, kind, ttl, ver_out)
    if rc ~= 0 then return fail(rc) end
    return tonumber(ver_out[0])
end

-- set(key, value, ttl_ms, sliding) -> version | nil, message, code
function Store:set(key, value, ttl_ms, sliding)
    return write(lib.gds_set, self, key, value, ttl_ms, sliding)
end

-- add(key, value, ttl_ms, sliding) -> version | nil, message, code (10: exists)
function Store:add(key, value, ttl_ms, sliding)
    return write(lib.gds_add, self, key, value, ttl_ms, sliding)
end

-- delete(key) -> true | nil, message, code (1: not found)
function Store:delete(key)
    local h = handle(self)
    check_str(key, "key")
    local rc = lib.gds_delete(h, key, #key)
    if rc ~= 0 then return fail(rc) end
    return true
end

-- touch(key, ttl_ms, sliding) -> true | nil, message, code
function Store:touch(key, ttl_ms, sliding)
    local h = handle(self)
    check_str(key, "key")
    local kind, ttl = expiry_of(ttl_ms, sliding)
    local rc = lib.gds_touch(h, key, #key, kind, ttl)
    if rc ~= 0 then return fail(rc) end
    return true
end

-- One lock attempt through `call` (gds_lock, or gds_lock_wait with its timeout bound in).
local function take_lock(self, key, takeover_after_ms, call)
    local h = handle(self)
    check_str(key, "key")
    local vp = ffi.new("uint8_t *[1]")
    local vl = ffi.new("size_t[1]")
    local m = ffi.new("gds_meta")
    local li = ffi.new("gds_lock_info")
    local rc = call(h, key, #key, takeover_after_ms or 120000, vp, vl, m, li)
    if rc == 0 then
        local v = ffi.string(vp[0], vl[0])
        lib.gds_buffer_free(vp[0])
        return v, M.lock_id_string(li.lock_id), meta_table(m), li.took_over ~= 0
    end
    local _, msg, code = fail(rc)
    if rc == S.GDS_ERR_LOCKED then
        return nil, msg, code, { lock_id = tonumber(li.lock_id), age_ms = tonumber(li.age_ms) }
    end
    return nil, msg, code
end

-- lock(key, takeover_after_ms) -> value, lock_id, meta, took_over
--   | nil, message, code[, holder] (12 locked: holder = {lock_id, age_ms})
function Store:lock(key, takeover_after_ms)
    return take_lock(self, key, takeover_after_ms, lib.gds_lock)
end

-- Phases of a request where ngx.sleep may yield (lua-nginx-module's list).
local SLEEP_PHASES = {
    rewrite = true, access = true, content = true, timer = true,
    ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true,
}

-- lock_wait(key, takeover_after_ms, timeout_ms) -> as lock(), waiting up to timeout_ms
-- (default 10000) while another lock id holds the session: code 12 only once it passed.
--
-- Outside nginx (a LuaJIT script, a CLI tool) this is gds_lock_wait: the thread sleeps on a
-- futex word of the segment and the holder's release wakes it at once. Inside nginx it must
-- not: a worker runs every request of its connections on one thread, so a blocking wait
-- would stall all of them for as long as the lock is held. There it polls gds_lock instead,
-- between ngx.sleep calls (1 ms, doubling up to 20 ms), which yield to the worker's event
-- loop; in a phase where ngx.sleep is not allowed (init, header_filter, log, ...) it makes
-- a single attempt (as lock()).
function Store:lock_wait(key, takeover_after_ms, timeout_ms)
    timeout_ms = timeout_ms or 10000
    local phase = ngx and ngx.get_phase and ngx.get_phase()
    if not phase then
        return take_lock(self, key, takeover_after_ms, function(h, k, n, t, ...)
            return lib.gds_lock_wait(h, k, n, t, timeout_ms, ...)
        end)
    end
    local deadline = now_ms() + timeout_ms
    local pause = 0.001
    while true do
        local v, a, b, c = self:lock(key, takeover_after_ms)
        if v ~= nil or b ~= S.GDS_ERR_LOCKED or not SLEEP_PHASES[phase] then return v, a, b, c end
        local left = deadline - now_ms()
        if left <= 0 then return v, a, b, c end
        ngx.sleep(math.min(pause, left / 1000))
        pause = math.min(pause * 2, 0.02)
    end
end

-- Lock ids are 64-bit: lock() returns one as a decimal string (exact, and fit for a cookie
-- or a JSON field); unlock/set_and_unlock take that string, a uint64_t cdata or a number.
function M.lock_id_string(id)
    return (tostring(ffi.cast("uint64_t", id)):gsub("ULL$", ""))
end

local function lock_id_of(id)
    if type(id) == "string" then
        if not id:match("^%d+$") or #id > 20 then
            error("gardenstate: lock id must be a decimal string", 3)
        end
        local v = ffi.new("uint64_t", 0)
        for i = 1, #id do v = v * 10 + (id:byte(i) - 48) end
        return v
    end
    return id
end

function Store:unlock(key, lock_id)
    local h = handle(self)
    check_str(key, "key")
    lock_id = lock_id_of(lock_id)
    local rc = lib.gds_unlock(h, key, #key, lock_id)
    if rc ~= 0 then return fail(rc) end
    return true
end

function Store:set_and_unlock(key, lock_id, value, ttl_ms, sliding)
    local h = handle(self)
    check_str(key, "key")
    check_str(value, "value")
    lock_id = lock_id_of(lock_id)
    local kind, ttl = expiry_of(ttl_ms, sliding)
    local rc = lib.gds_set_and_unlock(h, key, #key, lock_id, value, #value, kind, ttl, ver_out)
    if rc ~= 0 then return fail(rc) end
    return tonumber(ver_out[0])
end

local STATS_FIELDS = { "live_entries", "bytes_used", "bytes_free", "hits", "misses", "sets",
    "deletes", "expirations", "evictions", "touches", "locks", "lock_contentions",
    "lock_takeovers", "dead_reclaims", "sweeps", "clients", "feed_head" }
local INFO_FIELDS = { "segment_bytes", "heap_bytes", "page_size", "max_entries",
    "index_slots", "max_key", "max_value", "max_clients", "feed_len", "dataset_id", "flags" }

function Store:stats()
    local h = handle(self)
    local s = ffi.new("gds_stats")
    s.struct_size = ffi.sizeof("gds_stats")
    local rc = lib.gds_get_stats(h, s)
    if rc ~= 0 then return fail(rc) end
    local t = {}
    for _, f in ipairs(STATS_FIELDS) do t[f] = tonumber(s[f]) end
    return t
end

function Store:info()
    local h = handle(self)
    local s = ffi.new("gds_info")
    s.struct_size = ffi.sizeof("gds_info")
    local rc = lib.gds_get_info(h, s)
    if rc ~= 0 then return fail(rc) end
    local t = {}
    for _, f in ipairs(INFO_FIELDS) do t[f] = tonumber(s[f]) end
    t.dataset_id = (tostring(s.dataset_id):gsub("ULL$", "")) -- 64 bits: exact as a string
    return t
end

-- replication_state() -> { epoch, role, role_name, changes, writable } | nil, message, code
-- A few atomic loads: cheap enough for every request. role is a GDS_ROLE_* value (role_name
-- "primary", "standby", "fenced" or "lease_lapsed"); only a primary takes writes (writable);
-- changes grows on every role change and epoch raise: compare it with the value seen before to
-- learn that a failover happened.
function Store:replication_state()
    local h = handle(self)
    local s = ffi.new("gds_replication_state")
    s.struct_size = ffi.sizeof("gds_replication_state")
    local rc = lib.gds_get_replication_state(h, s)
    if rc ~= 0 then return fail(rc) end
    local role = tonumber(s.role)
    return { epoch = tonumber(s.epoch), role = role, role_name = ROLE_NAMES[role],
        changes = tonumber(s.changes), writable = role == M.GDS_ROLE_PRIMARY }
end

return M
