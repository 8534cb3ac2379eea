-- The test application: every gardenstate API call behind an HTTP endpoint, for
-- tests/test_nginx.py. Loaded by content_by_lua_file; `store` is the worker's handle
-- attached in init_worker_by_lua (see tests/nginx.conf.in).
local gardenstate = require("gardenstate")
local session = require("gardenstate.session")
local cjson = require("cjson.safe")

local function reply(status, t)
    t.pid = ngx.worker.pid()
    ngx.status = status
    ngx.header["Content-Type"] = "application/json"
    ngx.say(cjson.encode(t))
    return ngx.exit(status)
end

local function result(v, err, code, extra)
    if v == nil then
        local t = { err = err, code = code }
        if extra then t.holder = extra end
        return reply(code == 1 and 404 or 409, t)
    end
    return reply(200, { result = v })
end

local uri = ngx.var.uri
if uri == "/missing" then
    -- Attaching a segment that does not exist must fail with GDS_ERR_NO_SEGMENT.
    local s, err, code = gardenstate.attach(ngx.var.arg_name)
    if s then s:close() end
    return result(s and true, err, code)
end

if uri == "/lifecycle" then
    -- create / open / attach / close / destroy of a second segment, each outcome reported.
    local name = ngx.var.arg_name
    local r = {}
    local a, err, code = gardenstate.create(name, { max_value = 1024, max_entries = 1000 })
    r.create = a and true or code
    r.create_again = select(3, gardenstate.create(name))
    r.bad_option = select(3, gardenstate.create(name .. "-x", { no_such_option = 1 }))
    r.bad_name = select(3, gardenstate.create("bad/name"))
    local b = assert(gardenstate.open(name, { max_value = 1024, max_entries = 1000 }))
    r.open_max_value = b:info().max_value
    a:set("k", "v")
    b:close()
    r.close_twice = b:close()
    local c = assert(gardenstate.attach(name))
    r.attach_get = c:get("k")
    r.used_after_close = pcall(b.get, b, "k")
    r.not_a_string = pcall(c.set, c, "k", 42)
    c:close()
    local g = assert(gardenstate.attach_group(name)) -- our own segment: accepted as by attach
    r.attach_group_get = g:get("k")
    g:close()
    -- lazy with create: create-or-attach with exactly the options given.
    local lz = gardenstate.lazy(name .. "-lazy", { create = { max_value = 2048 }, retry_ms = 0 })
    r.lazy_max_value = assert(lz:store()):info().max_value
    r.lazy_same = lz:store() == lz:store()
    lz:store():close()
    gardenstate.destroy(name .. "-lazy")
    r.lazy_bad_option = pcall(gardenstate.lazy, name, { retry = 1 })
    a:close()
    r.destroy = gardenstate.destroy(name)
    r.destroy_again = select(3, gardenstate.destroy(name))
    r.attach_destroyed = select(3, gardenstate.attach(name))
    return reply(200, r)
end

if uri == "/abi" then
    -- A fresh copy of the module that expects another ABI version must refuse the library.
    local saved = package.loaded.gardenstate
    package.loaded.gardenstate = nil
    local g = require("gardenstate")
    package.loaded.gardenstate = saved
    g.GDS_ABI_VERSION = gardenstate.GDS_ABI_VERSION + 1
    local ok, err = g.load()
    local s, err2 = g.attach("anything")
    return reply(200, { ok = ok or false, err = err, attach_err = err2 })
end

if uri == "/session/nil" then
    -- A store that failed to attach (nil): the helper answers 503 and logs once per worker.
    session.start(nil)
    return reply(200, { err = "session.start(nil) returned" })
end

if store == nil then
    return reply(503, { err = "no store in this worker: " .. tostring(store_err) })
end

if uri == "/session" then
    local s, err, code = session.start(store, { ttl_ms = tonumber(ngx.var.arg_ttl) or 60000 })
    if not s then return reply(500, { err = err, code = code }) end
    local n = (s:get("n") or 0) + 1
    s:set("n", n)
    local ok, serr, scode = s:save()
    if not ok then return reply(500, { err = serr, code = scode }) end
    return reply(200, { n = n, id = s.id })
end

if uri == "/session/clear" then
    local s = assert(session.start(store))
    s:clear()
    assert(s:save())
    return reply(200, { cleared = true })
end

local op = ngx.var.arg_op
local key = ngx.var.arg_key and ngx.unescape_uri(ngx.var.arg_key)
local ttl = tonumber(ngx.var.arg_ttl)
local sliding = ngx.var.arg_sliding == "1"
local function body()
    ngx.req.read_body()
    local b = ngx.req.get_body_data()
    if b == nil then
        local f = ngx.req.get_body_file()
        if f then
            local fh = assert(io.open(f, "rb"))
            b = fh:read("*a")
            fh:close()
        end
    end
    return b or ""
end

if op == "get" then
    local v, meta, code = store:get(key)
    if v == nil then return result(nil, meta, code) end
    return reply(200, { result = v, meta = meta, len = #v, md5 = ngx.md5(v) })
elseif op == "set" then
    return result(store:set(key, body(), ttl, sliding))
elseif op == "add" then
    return result(store:add(key, body(), ttl, sliding))
elseif op == "delete" then
    return result(store:delete(key))
elseif op == "touch" then
    return result(store:touch(key, ttl, sliding))
elseif op == "lock" then
    local v, id, meta, took_over = store:lock(key, tonumber(ngx.var.arg_takeover) or 60000)
    if v == nil then return result(nil, id, meta, took_over) end
    return reply(200, { result = v, lock_id = id, meta = meta, took_over = took_over })
elseif op == "lock_wait" then
    local v, id, meta, took_over =
        store:lock_wait(key, tonumber(ngx.var.arg_takeover) or 60000, tonumber(ngx.var.arg_timeout))
    if v == nil then return result(nil, id, meta, took_over) end
    return reply(200, { result = v, lock_id = id, meta = meta, took_over = took_over })
elseif op == "unlock" then
    return result(store:unlock(key, ngx.var.arg_lock_id))
elseif op == "set_and_unlock" then
    return result(store:set_and_unlock(key, ngx.var.arg_lock_id, body(), ttl, sliding))
elseif op == "stats" then
    return result(store:stats())
elseif op == "info" then
    return result(store:info())
elseif op == "replication_state" then
    return result(store:replication_state())
elseif op == "version" then
    return result(gardenstate.version())
elseif op == "pid" then
    return reply(200, { result = ngx.worker.pid() })
end
return reply(400, { err = "unknown op " .. tostring(op) })
