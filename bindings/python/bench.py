"""The binding's benchmark: a 1 KiB get and set from Python, gardenstate beside redis-py on
loopback and a dict, in the same run (a benchmark, not a test: nothing is asserted).

    python bindings/python/bench.py [--ops N] [--repeat R]

redis-server (apt: redis-server) is started by the bench on a free loopback port, without
persistence, and stopped at the end; redis-py comes from pip (`pip install redis`). Without
either, that row is skipped. Each figure is the best of R rounds of N operations (the least
disturbed by other processes), in microseconds per operation, one thread.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import timeit
import uuid

import gardenstate


def best_us(fn, ops: int, repeat: int, timer=time.perf_counter) -> float:
    return min(timeit.repeat(fn, number=ops, repeat=repeat, timer=timer)) / ops * 1e6


def cpu_us(fn, ops: int, repeat: int) -> float:
    """CPU time of this thread per operation: on a loaded machine, less disturbed by the
    other processes than the wall clock (meaningless for redis, whose work is elsewhere)."""
    return best_us(fn, ops, repeat, timer=time.thread_time)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis():
    exe = shutil.which("redis-server")
    if exe is None:
        return None, "redis-server not installed (apt-get install redis-server)"
    try:
        import redis
    except ImportError:
        return None, "redis-py not installed (pip install redis)"
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="gds-bench-redis-")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", workdir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(200):
        try:
            client.ping()
            return (proc, client, workdir), f"redis-server {client.info()['redis_version']}, " \
                f"redis-py {redis.__version__}"
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    return None, "redis-server did not start"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()

    key = b"session:" + uuid.uuid4().hex.encode()
    value = os.urandom(1024)
    name = f"bench-{os.getpid()}"
    rows = []
    with gardenstate.Store.open(name, capacity_bytes=8 << 20, max_entries=1024) as store:
        store.set(key, value)
        assert store.get(key) == value
        rows.append(("gardenstate (compiled binding)",
                     best_us(lambda: store.get(key), args.ops, args.repeat),
                     best_us(lambda: store.set(key, value), args.ops, args.repeat),
                     cpu_us(lambda: store.get(key), args.ops, args.repeat),
                     cpu_us(lambda: store.set(key, value), args.ops, args.repeat)))
    gardenstate.destroy(name)

    d = {key: value}
    rows.append(("dict", best_us(lambda: d.get(key), args.ops, args.repeat),
                 best_us(lambda: d.__setitem__(key, value), args.ops, args.repeat),
                 cpu_us(lambda: d.get(key), args.ops, args.repeat),
                 cpu_us(lambda: d.__setitem__(key, value), args.ops, args.repeat)))

    redis_run, redis_note = start_redis()
    if redis_run is not None:
        proc, client, workdir = redis_run
        try:
            client.set(key, value)
            ops = max(1000, args.ops // 20)  # a round trip each: fewer, same rounds
            rows.append(("redis-py, loopback TCP",
                         best_us(lambda: client.get(key), ops, args.repeat),
                         best_us(lambda: client.set(key, value), ops, args.repeat),
                         None, None))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"python {sys.version.split()[0]}, gardenstate {gardenstate.version()} "
          f"({gardenstate.lib_path()}), {redis_note}")
    print(f"1 KiB value, one thread, best of {args.repeat} rounds, us per operation "
          f"(load average {os.getloadavg()[0]:.1f})")
    print(f"{'':32} {'get':>8} {'set':>8} {'get CPU':>8} {'set CPU':>8}")
    for label, get_us, set_us, get_cpu, set_cpu in rows:
        cpu = "" if get_cpu is None else f" {get_cpu:8.2f} {set_cpu:8.2f}"
        print(f"{label:32} {get_us:8.2f} {set_us:8.2f}{cpu}")


if __name__ == "__main__":
    main()
