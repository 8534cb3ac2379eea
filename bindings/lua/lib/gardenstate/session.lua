-- gardenstate.session: cookie sessions for lua-nginx-module, stored in a gardenstate segment.
--
--   -- init_worker_by_lua_block:  sessions = require("gardenstate").lazy("sessions")
--   local session = require("gardenstate.session")
--   local s, err = session.start(sessions, { ttl_ms = 1800000 })   -- in access/content phase
--   s:set("count", (s:get("count") or 0) + 1)
--   local ok, err = s:save()
--
-- Sessions follow bindings/SESSION-FORMAT.md, as the Flask, Django, PHP and ASP.NET helpers
-- do, so one visitor can be served by several runtimes on one session: the cookie
-- (default "gds_session") holds only a random id (32 bytes from /dev/urandom, base64url: 43
-- characters; any id of 16 to 128 characters of [A-Za-z0-9_-] is accepted, so the 64-hex
-- ids of earlier versions still are), and the data is a JSON object under
-- `key_prefix .. id` (default "session:"). The expiry is sliding by default: every read
-- extends it by ttl_ms. Concurrent requests of one session: the last save wins.
--
-- A save the segment refuses (GDS_ERR_READ_ONLY: this host is a standby, its primary is
-- fenced, a failover is in progress) ends the request with 503 and `Retry-After: 1`, not an
-- error for the app to turn into a 500: writes come back within about a second. Requests that
-- only read their session are served as usual.
local gardenstate = require("gardenstate")
local cjson = require("cjson.safe")

local M = {}
local READ_ONLY = gardenstate.status.GDS_ERR_READ_ONLY
local Session = {}
Session.__index = Session

M.defaults = {
    cookie = "gds_session",
    key_prefix = "session:",
    ttl_ms = 30 * 60 * 1000,
    sliding = true,
    path = "/",
    secure = false,
    httponly = true,
    samesite = "Lax",
}

local function random_id()
    local f, err = io.open("/dev/urandom", "rb")
    if not f then return nil, "gardenstate.session: /dev/urandom: " .. tostring(err) end
    local raw = f:read(32)
    f:close()
    if not raw or #raw ~= 32 then return nil, "gardenstate.session: short read of /dev/urandom" end
    -- base64url without padding (RFC 4648 section 5): 43 characters.
    return (ngx.encode_base64(raw, true):gsub("[+/]", { ["+"] = "-", ["/"] = "_" }))
end

-- The ids of SESSION-FORMAT.md: 16 to 128 characters of the base64url alphabet.
local function valid_id(id)
    return type(id) == "string" and #id >= 16 and #id <= 128 and not id:find("[^A-Za-z0-9_%-]")
end
M.valid_id = valid_id

local warned_no_store = false

-- No store to serve the session from: one log line per worker (the lazy handle logs its own
-- attach failures), and 503 for the request, which ends here.
local function unavailable(err)
    if err == nil and not warned_no_store then
        warned_no_store = true
        ngx.log(ngx.ERR, "gardenstate.session: no store (nil): the segment was not attached in "
            .. "init_worker; use gardenstate.lazy(name), which retries; answering 503")
    end
    return ngx.exit(ngx.HTTP_SERVICE_UNAVAILABLE)
end

-- A session write the segment refused: 503 with Retry-After, and the request ends here.
local function read_only(err)
    ngx.log(ngx.WARN, "gardenstate.session: the segment takes no writes (", tostring(err),
        "): answering 503")
    ngx.header["Retry-After"] = "1"
    return ngx.exit(ngx.HTTP_SERVICE_UNAVAILABLE)
end

-- start(store, opts) -> session | nil, message, code
-- `store` is a gardenstate.lazy handle (or an open store). Reads the session named by the
-- request's cookie; an absent, malformed or expired one starts a new, empty session (its
-- cookie is sent by save()). When the segment cannot be attached (or `store` is nil), the
-- request ends here with 503 (ngx.exit) and the reason is logged once, not per request.
function M.start(store, opts)
    if getmetatable(store) == gardenstate.Lazy then
        local s, err = store:store()
        if not s then return unavailable(err) end
        store = s
    elseif store == nil then
        return unavailable(nil)
    end
    local o = {}
    for k, v in pairs(M.defaults) do o[k] = v end
    for k, v in pairs(opts or {}) do o[k] = v end
    local self = setmetatable({ store = store, opts = o, data = {}, fresh = true,
        dirty = false }, Session)
    local id = ngx.var["cookie_" .. o.cookie]
    if valid_id(id) then
        local raw, err, code = store:get(o.key_prefix .. id)
        if raw then
            local t = cjson.decode(raw)
            if type(t) == "table" then
                self.id, self.data, self.fresh = id, t, false
                return self
            end
            -- Not a JSON object: treat as a new session rather than fail every request.
        elseif code ~= 1 then
            return nil, err, code
        end
    end
    local nid, err = random_id()
    if not nid then return nil, err end
    self.id = nid
    return self
end

function Session:get(k) return self.data[k] end

function Session:set(k, v)
    self.data[k] = v
    self.dirty = true
end

function Session:clear()
    self.data = {}
    self.dirty = true
end

local function cookie_header(self, value, max_age)
    local o = self.opts
    local c = o.cookie .. "=" .. value .. "; Path=" .. o.path
    if max_age then c = c .. "; Max-Age=" .. max_age end
    if o.httponly then c = c .. "; HttpOnly" end
    if o.secure then c = c .. "; Secure" end
    if o.samesite then c = c .. "; SameSite=" .. o.samesite end
    return c
end

-- save() -> true | nil, message, code
-- Writes the data (when changed or new) and sends the cookie for a new session; an emptied
-- session is deleted and its cookie removed. Call it before the response headers are sent.
-- A write the segment refuses ends the request with 503 and Retry-After: 1 (ngx.exit).
function Session:save()
    local o = self.opts
    local key = o.key_prefix .. self.id
    if next(self.data) == nil then
        if not self.fresh then
            local ok, err, code = self.store:delete(key)
            if code == READ_ONLY then return read_only(err) end
            if not ok and code ~= 1 then return nil, err, code end
            ngx.header["Set-Cookie"] = cookie_header(self, "", 0)
        end
        return true
    end
    if self.dirty or self.fresh then
        local raw, jerr = cjson.encode(self.data)
        if not raw then return nil, "gardenstate.session: cannot encode: " .. tostring(jerr) end
        local ok, err, code = self.store:set(key, raw, o.ttl_ms, o.sliding)
        if code == READ_ONLY then return read_only(err) end
        if not ok then return nil, err, code end
    end
    if self.fresh then
        ngx.header["Set-Cookie"] = cookie_header(self, self.id)
        self.fresh = false
    end
    self.dirty = false
    return true
end

return M
