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
gds_status gds_options_default(struct gds_options *opts);
gds_status gds_create(const char *name,
                      const struct gds_options *opts,
                      struct gds_store **store_out);
gds_status gds_open(const char *name,
                    const struct gds_options *opts,
                    struct gds_store **store_out);
gds_status gds_attach(const char *name,
                      struct gds_store **store_out);
void gds_close(struct gds_store *store);
gds_status gds_destroy(const char *name);
gds_status gds_get_info(const struct gds_store *store,
                        struct gds_info *info_out);
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

local function make_options(opts)
    local o = ffi.new("gds_options")
    o.struct_size = ffi.sizeof("gds_options")
    local rc = lib.gds_options_default(o)
    if rc ~= 0 then return fail(rc) end
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
    if fn == "attach" then
        rc = lib.gds_attach(name, out)
    else
        local o, e, c = make_options(opts)
        if not o then return nil, e, c end
        rc = lib["gds_" .. fn](name, o, out)
    end
    if rc ~= 0 then return fail(rc) end
    return wrap(out[0], name)
end

-- open(name, opts): attach, or create with opts if absent. create(name, opts): only create.
-- attach(name): only attach an existing segment (a worker's call).
function M.open(name, opts) return open_with("open", name, opts) end
function M.create(name, opts) return open_with("create", name, opts) end
function M.attach(name) return open_with("attach", name) end

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

-- lock(key, takeover_after_ms) -> value, lock_id, meta, took_over
--   | nil, message, code[, holder] (12 locked: holder = {lock_id, age_ms})
function Store:lock(key, takeover_after_ms)
    local h = handle(self)
    check_str(key, "key")
    local vp = ffi.new("uint8_t *[1]")
    local vl = ffi.new("size_t[1]")
    local m = ffi.new("gds_meta")
    local li = ffi.new("gds_lock_info")
    local rc = lib.gds_lock(h, key, #key, takeover_after_ms or 120000, vp, vl, m, li)
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

return M
