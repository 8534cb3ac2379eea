-- wrk script of bench.sh: every request names one of 1000 sessions (64 hex digits: an id every
-- handler accepts), round robin from a random start per thread.
local ids, n = {}, 0
function init(args)
    for i = 1, 1000 do ids[i] = string.format("%064x", i) end
    n = math.random(1000)
end
function request()
    n = n + 1
    return wrk.format(nil, nil, { Cookie = "PHPSESSID=" .. ids[n % 1000 + 1] })
end
