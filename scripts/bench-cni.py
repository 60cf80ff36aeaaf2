"""Times CNI plugin invocations for scripts/bench-cni.sh.

usage: bench-cni.py PLUGIN CONF NODE_NETNS|- PREFIX COUNT MODE
  MODE seq: COUNT sequential ADDs (one warm-up first, not counted), then DELs
  MODE par: COUNT ADDs started at once, then DELs
Prints one line: "p50_ms p99_ms" (seq) or "wall_s" (par), plus the DEL time.
Container netns are /var/run/netns/PREFIX<i> (made by the caller).
"""
import ctypes
import os
import subprocess
import sys
import threading
import time

plugin, conf_path, node, prefix, count, mode = sys.argv[1:7]
count = int(count)
conf = open(conf_path, "rb").read()
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def enter_node():
    if node != "-":
        fd = os.open(f"/var/run/netns/{node}", os.O_RDONLY)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        os.close(fd)


def call(command, i):
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": f"{prefix}c{i}",
        "CNI_NETNS": f"/var/run/netns/{prefix}{i}",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/usr/lib/cni",
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    }
    started = time.perf_counter()
    done = subprocess.run([plugin], input=conf, env=env, capture_output=True,
                          preexec_fn=enter_node)
    took = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{plugin} {command} {i} failed: {done.stdout!r} {done.stderr!r}")
    return took


def parallel(command, ids):
    threads = [threading.Thread(target=call, args=(command, i)) for i in ids]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


if mode == "seq":
    call("ADD", "w")  # warm-up (for Plexus: creates the tenant network)
    times = sorted(call("ADD", i) for i in range(count))
    p50 = times[len(times) // 2] * 1e3
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))] * 1e3
    started = time.perf_counter()
    for i in ["w"] + list(range(count)):
        call("DEL", i)
    print(f"{p50:.1f} {p99:.1f} {time.perf_counter() - started:.2f}")
else:
    wall = parallel("ADD", range(count))
    print(f"{wall:.2f} {parallel('DEL', range(count)):.2f}")
