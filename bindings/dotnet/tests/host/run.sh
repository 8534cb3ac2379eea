#!/usr/bin/env bash
# The real-host suite: nginx in front of two fastcgi-mono-server4 processes (a web garden)
# serving tests/host/app over one gardenstate segment, checked over HTTP with curl.
#
#   tests/host/run.sh OUT_DIR     # OUT_DIR holds Gardenstate.dll and Gardenstate.Web.dll;
#                                 # libgardenstate.so must be on LD_LIBRARY_PATH
#
# Called by bindings/dotnet/test.sh, which builds those and installs nginx and
# mono-fastcgi-server4. Prints the figures it measures; never asserts a timing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(cd "$1" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/gds-host.XXXXXX")
segment="gds-host-$$"
shm_dir=${GARDENSTATE_SHM_DIR:-/dev/shm}
pids=()
failed=0

cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -f "$shm_dir/$segment"
    if [ "$failed" -ne 0 ] || [ -n "${GDS_HOST_KEEP:-}" ]; then
        echo "--- logs ($work)"; tail -n 30 "$work"/mono-*.log "$work"/nginx-error.log 2>/dev/null || true
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

fail() { failed=$((failed + 1)); echo "FAIL $*"; }
ok() { echo "ok   $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else fail "$what"; fi; }

# Three free loopback TCP ports (nothing listening on them now).
next_port=$((20000 + $$ % 20000))
free_port() { # VAR
    while ss -Htln "sport = :$next_port" | grep -q .; do next_port=$((next_port + 1)); done
    eval "$1=$next_port"; next_port=$((next_port + 1))
}
free_port port_a; free_port port_b; free_port port_nginx

# The app: the pages, web.config with this run's segment, bin/ with the binding.
app="$work/app"
mkdir -p "$app/bin" "$work/tmp"
cp "$here"/app/*.aspx "$here"/app/*.ashx "$app/"
sed "s/@SEGMENT@/$segment/" "$here/app/web.config.in" > "$app/web.config"
cp "$out/Gardenstate.dll" "$out/Gardenstate.Web.dll" "$app/bin/"
sed -e "s#@DIR@#$work#g" -e "s#@APP@#$app#g" -e "s/@PORT_A@/$port_a/g" -e "s/@PORT_B@/$port_b/g" \
    -e "s/@PORT_NGINX@/$port_nginx/g" "$here/nginx.conf.in" > "$work/nginx.conf"
rm -f "$shm_dir/$segment"

# Two fastcgi-mono-server4 processes (the script execs mono: $! is the worker's pid).
start_backend() { # name port
    fastcgi-mono-server4 --applications="/:$app" --socket="tcp:127.0.0.1:$2" \
        --printlog --loglevels=Standard >"$work/mono-$1.log" 2>&1 &
    pids+=($!)
    eval "pid_$1=$!"
}
start_backend a "$port_a"
start_backend b "$port_b"
nginx -c "$work/nginx.conf" -p "$work" -e "$work/nginx-error.log"
base="http://127.0.0.1:$port_nginx"

# get BACKEND PATH JAR: GET through nginx (BACKEND a, b, or any), with the cookie jar JAR
# (read and updated; "none" for no cookies); sets $code and $body.
get() {
    local jar_args=()
    [ "$3" != none ] && jar_args=(-b "$3" -c "$3")
    code=$(curl -s -o "$work/body" -w '%{http_code}' -H "X-Backend: $1" "${jar_args[@]}" --max-time 120 "$base$2") || code=000
    body=$(cat "$work/body")
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2" | head -1; }
cookie() { awk '$6 == "gds_session" { print $7 }' "$1"; }

echo "== start: nginx on :$port_nginx, fastcgi-mono-server4 a (pid $pid_a) on :$port_a, b (pid $pid_b) on :$port_b, segment $segment"
start=$(date +%s)
for b in a b; do
    for _ in $(seq 1 240); do
        get "$b" /status.ashx none
        [ "$code" = 200 ] && break
        sleep 0.5
    done
    [ "$code" = 200 ] || { fail "backend $b answers status.ashx (last: HTTP $code)"; exit 1; }
    get "$b" /counter.aspx none; get "$b" /readonly.aspx none # first hits compile the pages
done
echo "   both backends up and pages compiled in $(( $(date +%s) - start )) s"
get a /status.ashx none; sa=$body
get b /status.ashx none; sb=$body
check "each backend is its own process (pids $(field pid "$sa"), $(field pid "$sb"))" \
    test "$(field pid "$sa")" = "$pid_a" -a "$(field pid "$sb")" = "$pid_b"
check "web.config created the segment as configured (maxValue=65536, maxKey=128)" \
    test "$(field maxValue "$sa")" = 65536 -a "$(field maxKey "$sb")" = 128

echo "== new visitor"
jar=$work/new.jar
get a /counter.aspx "$jar"
check "a new visitor gets HTTP 200 (got $code)" test "$code" = 200
check "a new session: new=True n=1" test "$(field new "$body")" = True -a "$(field n "$body")" = 1
id=$(cookie "$jar")
check "a session cookie is issued ($id)" test -n "$id" -a "$id" = "$(field id "$body")"
check "its id is the session format's: 43 base64url characters ($id)" grep -Eqx '[A-Za-z0-9_-]{43}' <<<"$id"
check "the cookie is HttpOnly, Path=/ ($(grep gds_session "$jar" | tr '\t' ' '))" \
    awk '$6 == "gds_session" && $1 ~ /^#HttpOnly_/ && $3 == "/" { found = 1 } END { exit !found }' "$jar"
get b /status.ashx "$jar"
check "the session exists afterward, unlocked ($body)" test "$(field exists "$body")" = 1 -a "$(field lock "$body")" = 0

echo "== an unknown id, or one outside the session format, is never adopted (Mono's own manager answered HTTP 500 for 129 characters)"
for bad in "$(printf 'A%.0s' $(seq 43))" 'bad,id-0123456789abcdef' 'short' "$(printf 'x%.0s' $(seq 129))"; do
    code=$(curl -s -o "$work/body" -D "$work/head" -w '%{http_code}' -H "X-Backend: a" \
        -H "Cookie: gds_session=$bad" --max-time 120 "$base/counter.aspx") || code=000
    body=$(cat "$work/body")
    newid=$(sed -n 's/^Set-Cookie: gds_session=\([^;]*\);.*/\1/Ip' "$work/head" | tr -d '\r')
    check "cookie ${bad:0:24}...: HTTP 200, a new session under a new id ($code, $(field new "$body"), $newid)" \
        test "$code" = 200 -a "$(field new "$body")" = True -a "$(field id "$body")" = "$newid" -a "$newid" != "$bad"
done

echo "== read-only pages (EnableSessionState=ReadOnly)"
get b /readonly.aspx none
check "a new visitor on a read-only page gets HTTP 200 (got $code)" test "$code" = 200
get b /readonly.aspx "$jar"
check "a read-only page reads the session (n=1, new=False): $body" \
    test "$code" = 200 -a "$(field n "$body")" = 1 -a "$(field new "$body")" = False
get a /status.ashx "$jar"
check "a read-only page leaves no lock behind" test "$(field lock "$body")" = 0
get b /counter.aspx "$jar"
check "the session is writable after the read-only page (n=2)" test "$(field n "$body")" = 2

echo "== one session through both processes"
jar=$work/cross.jar
get a /counter.aspx "$jar"; p1=$(field pid "$body"); n1=$(field n "$body")
get b /counter.aspx "$jar"; p2=$(field pid "$body"); n2=$(field n "$body")
get a /readonly.aspx "$jar"; p3=$(field pid "$body"); n3=$(field n "$body")
check "written through a (pid $p1, n=$n1), incremented through b (pid $p2, n=$n2), read through a (pid $p3, n=$n3)" \
    test "$p1" = "$pid_a" -a "$p2" = "$pid_b" -a "$p3" = "$pid_a" -a "$n1" = 1 -a "$n2" = 2 -a "$n3" = 2

echo "== four concurrent requests on one session, each holding it 1 s (backends a, b, a, b)"
jar=$work/conc.jar
get a /counter.aspx "$jar"
t0=$(date +%s%N)
cpids=()
i=0
for b in a b a b; do
    i=$((i + 1))
    curl -s -o "$work/conc$i" -w '%{http_code}' -H "X-Backend: $b" -b "$jar" --max-time 120 \
        "$base/counter.aspx?work=1000" >"$work/conc$i.code" &
    cpids+=($!)
done
for p in "${cpids[@]}"; do wait "$p" || true; done
wall_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
grep -h page= "$work"/conc[1-4] >"$work/conc.all"
check "all four answered HTTP 200 ($(cat "$work"/conc[1-4].code | tr '\n' ' '))" \
    test "$(cat "$work"/conc[1-4].code | tr -d '\n')" = 200200200200
check "both processes served them" \
    test "$(sed -n 's/.* pid=\([0-9]*\).*/\1/p' "$work/conc.all" | sort -u | wc -l)" = 2
check "no update lost: n = 2, 3, 4, 5" \
    test "$(sed -n 's/.* n=\([0-9]*\).*/\1/p' "$work/conc.all" | sort -n | tr '\n' ' ')" = "2 3 4 5 "
# Sorted by entry, each request entered after the previous one left: no overlap.
overlap=$(awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } print v["enter"], v["leave"] }' \
    "$work/conc.all" | sort -n | awk 'NR > 1 && $1 < last { bad++ } { gaps = gaps (NR > 1 ? " " $1 - last : ""); last = $2 }
    END { print (bad + 0) ":" gaps }')
check "the four held the session one after another (handoff gaps ms:${overlap#*:})" test "${overlap%%:*}" = 0
echo "   wall time ${wall_ms} ms for 4 x 1000 ms of work (Mono's module polls a locked session every 500 ms)"

echo "== a too-large session value"
jar=$work/big.jar
get b /counter.aspx "$jar"
get b "/counter.aspx?big=100000" "$jar"
cp "$work/body" "$work/big.html"
check "HTTP 500 with an error page that says why (got $code)" \
    sh -c "test $code = 500 && grep -q 'more than the segment.*max value (65536 bytes)' '$work/big.html'"
echo "   the page says: $(grep -o 'session &quot;[^<]*\|session "[^<]*' "$work/big.html" | head -1 | cut -c1-160)"
get a /status.ashx "$jar"
check "the session's lock was released" test "$(field lock "$body")" = 0
get b /counter.aspx "$jar"
check "the worker lives on (pid $(field pid "$body")) and the session kept its contents (n=2)" \
    test "$code" = 200 -a "$(field pid "$body")" = "$pid_b" -a "$(field n "$body")" = 2

echo "== Session.Abandon()"
jar=$work/abandon.jar
get a /counter.aspx "$jar"
get b "/counter.aspx?abandon=1" "$jar"
check "the abandoning request answers (HTTP $code)" test "$code" = 200
get a /status.ashx "$jar"
check "the abandoned session is gone from the segment ($body)" test "$(field exists "$body")" = 0

echo "== session expiry"
jar=$work/exp.jar
get a "/counter.aspx?timeout=1" "$jar"
old=$(cookie "$jar")
get b /status.ashx "$jar"
ttl=$(field ttl "$body")
check "Session.Timeout = 1 gives the entry a TTL of at most 1 minute (ttl_left $ttl ms)" \
    test -n "$ttl" -a "${ttl:-0}" -gt 0 -a "${ttl:-0}" -le 60000
get b "/status.ashx?expire=1" "$jar"   # the engine's expiry now, not 60 s of sleep
sleep 0.1
get a /status.ashx "$jar"
check "the expired session is gone" test "$(field exists "$body")" = 0
get b /counter.aspx "$jar"
check "the next request starts a new session (new=True n=1, id $(field id "$body") after $old)" \
    test "$(field new "$body")" = True -a "$(field n "$body")" = 1 -a "$(field id "$body")" != "$old"

echo "== the lock holder's process killed (SIGKILL) mid-request"
jar=$work/kill.jar
get a /counter.aspx "$jar"
curl -s -o "$work/holder" -w '%{http_code}' -H "X-Backend: a" -b "$jar" --max-time 120 \
    "$base/counter.aspx?work=60000" >"$work/holder.code" &
holder=$!
for _ in $(seq 1 200); do
    get b /status.ashx "$jar"
    [ "$(field lock "$body")" != 0 ] && break
    sleep 0.1
done
check "a's request holds the session lock ($(field lock "$body"))" test "$(field lock "$body")" != 0
curl -s -o "$work/waiter" -w '%{http_code}' -H "X-Backend: b" -b "$jar" --max-time 120 \
    "$base/counter.aspx" >"$work/waiter.code" &
waiter=$!
sleep 0.3 # b's request is now waiting for the lock (polling it every 500 ms)
t0=$(date +%s%N)
kill -KILL "$pid_a" # (bash reports it "Killed" below)
wait "$waiter" || true
took_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
wait "$holder" || true
wait "$pid_a" 2>/dev/null || true
w=$(cat "$work/waiter")
check "b took the session over and answered (HTTP $(cat "$work/waiter.code"), pid $(field pid "$w"), n=$(field n "$w"))" \
    test "$(cat "$work/waiter.code")" = 200 -a "$(field pid "$w")" = "$pid_b" -a "$(field n "$w")" = 2
check "the killed request got nginx's 502 (got $(cat "$work/holder.code"))" test "$(cat "$work/holder.code")" = 502
echo "   b answered ${took_ms} ms after the SIGKILL (the engine takes a dead owner's lock at once; Mono polls every 500 ms)"
get b /status.ashx "$jar"
check "the session is unlocked afterward" test "$(field lock "$body")" = 0
if [ -n "${GARDENSTATE_CLI:-}" ]; then
    check "gardenstate check: the segment is consistent" \
        sh -c '"$0" check "$1" >"$2" 2>&1' "$GARDENSTATE_CLI" "$segment" "$work/check.log"
fi

if [ "$failed" -ne 0 ]; then echo "$failed real-host checks failed"; exit 1; fi
echo "ok   real host: nginx + 2 x fastcgi-mono-server4 over one segment"
