#!/usr/bin/env bash
# Benchmarks PHP sessions under php-fpm (4 static children, preloaded) behind nginx, in one
# run: this binding against PHP's default `files` handler and phpredis's `redis` handler
# (redis-server on loopback, session locking on), plus a page without a session (the floor).
# Each request reads, increments and writes one of 1000 sessions. wrk drives it; CPU per
# request is the CPU time of php-fpm (and of nginx and redis-server) over the run, divided
# by the requests.
#
#   bindings/php/bench.sh            # from anywhere; as root it installs what is missing:
#                                    # php8.2-cli php8.2-fpm php8.2-redis nginx redis-server wrk
#   GDS_PHP_BENCH_SECONDS=5 GDS_PHP_BENCH_ROUNDS=3 GDS_PHP_BENCH_CONNECTIONS=8 bindings/php/bench.sh
# Handlers take turns, round after round, and the medians are printed: on a shared machine
# a load change then hits every handler alike.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${GDS_PHP_BENCH_SECONDS:-5}
rounds=${GDS_PHP_BENCH_ROUNDS:-3}
conns=${GDS_PHP_BENCH_CONNECTIONS:-8}

need=()
command -v php8.2 >/dev/null 2>&1 || need+=(php8.2-cli)
command -v php-fpm8.2 >/dev/null 2>&1 || need+=(php8.2-fpm)
php8.2 -m 2>/dev/null | grep -qx redis || need+=(php8.2-redis)
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== install ${need[*]} (apt-get)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -o DPkg::Lock::Timeout=600 -y -qq "${need[@]}"
    else
        echo "bench.sh: missing ${need[*]}: install them (apt-get install ${need[*]})" >&2
        exit 1
    fi
fi

echo "== build libgardenstate (release)"
cargo build --release -p gardenstate-ffi -p gardenstate-replicator
target_dir=$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
export GARDENSTATE_LIB="$target_dir/release/libgardenstate.so"
segment="gds-phpbench-$$"
prefix="$target_dir/php-bench/$$"
# shellcheck source=tests/serve.sh
. bindings/php/tests/serve.sh
redis_pid=
cleanup() {
    unserve "$prefix"
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null || true
    "$target_dir/release/gardenstate" destroy --yes --force "$segment" >/dev/null 2>&1 || true
    rm -rf "$prefix"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$prefix"

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$prefix" \
    >"$prefix/redis.log" 2>&1 &
redis_pid=$!
port=$(free_port)
serve "$prefix" "$port" <<EOF
env[GDS_PHP_SEGMENT] = $segment
env[GDS_PHP_REDIS] = tcp://127.0.0.1:$redis_port
php_value[session.use_strict_mode] = 0
php_value[redis.session.locking_enabled] = 1
EOF
[ "$served" -eq 1 ] || exit 1

ticks() { # CPU ticks (user + system) of the given pids and their children
    local t=0 p
    for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
        [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$t"
}
hz=$(getconf CLK_TCK)
fpm_pid=$(cat "$prefix/fpm.pid")
nginx_pid=$(cat "$prefix/nginx.pid")

echo "== $(php8.2 -v | head -1 | cut -d' ' -f1-2), nginx, 4 FPM children; wrk -t2 -c$conns -d${secs}s per handler and round, $rounds rounds (interleaved, so load drift hits all alike); $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
results="$prefix/results"
: >"$results"
for round in $(seq "$rounds"); do
    for h in none files redis gardenstate; do
        url="http://127.0.0.1:$port/bench.php?h=$h"
        [ "$round" -eq 1 ] && wrk -t2 -c"$conns" -d2s -s bindings/php/tests/bench.lua "$url" >/dev/null # warm up
        f0=$(ticks "$fpm_pid"); a0=$((f0 + $(ticks "$nginx_pid") + $(ticks "$redis_pid")))
        out=$(wrk -t2 -c"$conns" -d"${secs}s" -s bindings/php/tests/bench.lua "$url")
        f1=$(ticks "$fpm_pid"); a1=$((f1 + $(ticks "$nginx_pid") + $(ticks "$redis_pid")))
        reqs=$(sed -nE 's/^ *([0-9]+) requests in.*/\1/p' <<<"$out")
        rps=$(sed -nE 's/^Requests\/sec: *([0-9.]+)/\1/p' <<<"$out")
        if grep -qE 'Non-2xx|Socket errors' <<<"$out" || [ -z "$reqs" ]; then
            echo "bench.sh: $h: errors: $out" >&2
            exit 1
        fi
        awk -v h="$h" -v r="$rps" -v n="$reqs" -v f=$((f1 - f0)) -v a=$((a1 - a0)) -v hz="$hz" \
            'BEGIN { printf "%s %.0f %.0f %.0f\n", h, r, f / hz / n * 1e6, a / hz / n * 1e6 }' >>"$results"
    done
done
echo "medians of $rounds rounds:"
printf '%-12s %10s %14s %26s\n' handler 'req/s' 'fpm CPU/req' 'fpm+nginx+redis CPU/req'
for h in none files redis gardenstate; do
    med() { grep "^$h " "$results" | awk -v c="$1" '{print $c}' | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
    printf '%-12s %10s %11s us %23s us\n' "$h" "$(med 2)" "$(med 3)" "$(med 4)"
done
echo "every round (handler req/s fpm-us all-us):"
sed 's/^/  /' "$results"
if grep -q 'Fatal' "$prefix/php.log" 2>/dev/null; then
    echo "bench.sh: PHP fatal errors:" >&2
    grep Fatal "$prefix/php.log" >&2
    exit 1
fi
