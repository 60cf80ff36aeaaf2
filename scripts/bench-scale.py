"""The API, metrics and probe side of scripts/bench-scale.sh.

usage (inside the bench's host namespace, where the API and agent listen):
  bench-scale.py setup STATE               tenant, router, probe bridge and route; STATE gets their ids
  bench-scale.py ports STATE N PER_BRIDGE  N ports (batches of 25), bound to s0..s<N-1>; prints timings
  bench-scale.py served URL N TIMEOUT LOG  waits until the agent's /metrics shows N ports;
                                           prints the seconds since $BENCH_T0 (epoch seconds)
  bench-scale.py nsdb-read URL              prints the agent's initial NSDB read from its /metrics:
                                           "done_epoch_s read_s records" (nan until it is done)
  bench-scale.py flips STATE COUNT         flips the route's next hop COUNT times; prints
                                           "p50_ms p99_ms max_ms api_p50_ms timeouts"
Environment: PLEXUS_API (http://HOST:PORT), PLEXUS_TOKEN.
"""
import concurrent.futures
import ctypes
import http.client
import json
import os
import socket
import struct
import sys
import threading
import time
import urllib.parse
import uuid

API = urllib.parse.urlsplit(os.environ.get("PLEXUS_API", "http://127.0.0.1:18470"))
TOKEN = os.environ.get("PLEXUS_TOKEN", "")
local = threading.local()


def call(method, path, body=None, ok=(200, 201)):
    """One API call on this thread's keep-alive connection; returns the JSON answer."""
    for attempt in range(3):
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(API.hostname, API.port, timeout=60)
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        try:
            conn.request(method, path, json.dumps(body) if body is not None else None, headers)
            answer = conn.getresponse()
            data = answer.read()
        except (http.client.HTTPException, OSError):
            conn.close()
            local.conn = None
            if attempt == 2:
                raise
            continue
        if answer.status not in ok:
            sys.exit(f"bench-scale: {method} {path}: {answer.status} {data[:300]!r}")
        return json.loads(data) if data else None


def load(state):
    with open(state) as f:
        return json.load(f)


def setup(state):
    host = [h for h in call("GET", "/v1/hosts")["items"] if h["name"] == os.environ["BENCH_HOST"]][0]
    tenant = call("POST", "/v1/tenants", {"name": "scale"})["id"]
    router = call("POST", "/v1/routers", {"tenant_id": tenant, "name": "r"})["id"]
    # The probe subnet 10.0.1.0/24: pods S (.10), X (.20) and Y (.30) on a
    # bridge linked to the router (.1); 172.20.0.0/16 goes via X or Y.
    bridge = call("POST", "/v1/bridges", {"tenant_id": tenant, "name": "probe"})["id"]
    rport = call("POST", f"/v1/routers/{router}/ports", {"address": "10.0.1.1/24"})["id"]
    bport = call("POST", f"/v1/bridges/{bridge}/ports", {})["id"]
    call("PUT", f"/v1/ports/{rport}/link", {"peer_id": bport})
    for name in ("ps", "px", "py"):
        port = call("POST", f"/v1/bridges/{bridge}/ports", {})["id"]
        call("PUT", f"/v1/ports/{port}/binding", {"host_id": host["id"], "interface_name": name})
    route = call("POST", f"/v1/routers/{router}/routes",
                 {"dst": "172.20.0.0/16", "next_hop_port": rport, "next_hop_gateway": "10.0.1.20"})["id"]
    with open(state, "w") as f:
        json.dump({"host": host["id"], "tenant": tenant, "router": router, "route": route}, f)


def ports(state, n, per_bridge):
    s = load(state)
    started = time.perf_counter()
    bridges = [call("POST", "/v1/bridges", {"tenant_id": s["tenant"], "name": f"scale{b}"})["id"]
               for b in range((n + per_bridge - 1) // per_bridge)]
    ids = [str(uuid.uuid4()) for _ in range(n)]

    def batch(first):
        ops = [{"op": "put", "collection": "ports",
                "record": {"id": ids[i], "device_id": bridges[i // per_bridge], "device_type": "bridge",
                           "mac": "02:5c:%02x:%02x:%02x:%02x" % tuple(struct.pack(">I", i))}}
               for i in range(first, min(first + 25, n))]
        call("POST", "/v1/batch", {"operations": ops})

    def bind(i):
        call("PUT", f"/v1/ports/{ids[i]}/binding", {"host_id": s["host"], "interface_name": f"s{i}"})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(batch, range(0, n, 25)))
        created = time.perf_counter()
        list(pool.map(bind, range(n)))
    bound = time.perf_counter()
    print(f"{created - started:.1f} {bound - created:.1f}")


def served(url, n, timeout, log):
    """Polls the agent's /metrics until it shows n ports (an rx series each);
    gives up early when the agent's log says it cannot read the NSDB."""
    t0 = float(os.environ["BENCH_T0"])
    u = urllib.parse.urlsplit(url)
    deadline = time.time() + timeout
    seen = -1
    while time.time() < deadline:
        with open(log, errors="replace") as f:
            warnings = [line.strip() for line in f if " WARN " in line or " ERROR " in line]
        if sum("NSDB unreachable" in line for line in warnings) >= 3:
            sys.exit(f"bench-scale: the agent cannot read the NSDB ({seen} of {n} ports served); "
                     "its first warnings and its last:\n" + "\n".join(warnings[:3] + warnings[-1:]))
        try:
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
            conn.request("GET", u.path)
            text = conn.getresponse().read().decode()
            conn.close()
            seen = sum(1 for line in text.splitlines()
                       if line.startswith("plexus_port_packets_total{") and 'direction="rx"' in line)
            if seen >= n:
                print(f"{time.time() - t0:.3f}")
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"bench-scale: the agent served {seen} of {n} ports after {timeout} s")


def metrics_text(url):
    """The agent's /metrics."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("GET", u.path)
    text = conn.getresponse().read().decode()
    conn.close()
    return text


def nsdb_read(url):
    """The plexus_agent_nsdb_initial_read_* gauges of the agent's /metrics."""
    text = metrics_text(url)
    gauges = {}
    for line in text.splitlines():
        if line.startswith("plexus_agent_nsdb_initial_read_"):
            name, _, value = line.partition(" ")
            gauges[name] = value
    names = ("done_timestamp_seconds", "seconds", "records")
    print(" ".join(gauges.get("plexus_agent_nsdb_initial_read_" + n, "nan") for n in names))


def builds(url):
    """Topologies built so far, whole and routes only, with the seconds
    spent: "whole_n whole_s routes_n routes_s"."""
    values = {}
    for line in metrics_text(url).splitlines():
        if line.startswith("plexus_topology_build"):
            name, _, value = line.rpartition(" ")
            values[name] = value
    out = []
    for kind in ("whole", "routes"):
        out.append(values.get(f'plexus_topology_builds_total{{kind="{kind}"}}', "nan"))
        out.append(values.get(f'plexus_topology_build_seconds_total{{kind="{kind}"}}', "nan"))
    print(" ".join(out))


def enter(path):
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), "setns")
    os.close(fd)


def flips(state, count):
    s = load(state)
    # The probe socket lives in pod S; this thread comes back to the host
    # namespace for the API.
    home = "/proc/self/ns/net"
    home_fd = os.open(home, os.O_RDONLY)
    enter(f"/var/run/netns/{os.environ['BENCH_PROBE_NS']}")
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(home_fd, 0x40000000) != 0:
        raise OSError(ctypes.get_errno(), "setns back")
    os.close(home_fd)
    probe.connect(("172.20.0.1", 9999))
    replies = []  # (which, sent_ns)
    lock = threading.Condition()
    stop = threading.Event()

    def send():
        while not stop.is_set():
            try:
                probe.send(struct.pack(">Q", time.perf_counter_ns()))
            except OSError:
                pass  # unreachable for a moment while the route moves
            time.sleep(0.0005)

    def receive():
        while not stop.is_set():
            try:
                data = probe.recv(64)
            except OSError:
                continue
            if len(data) == 9:
                with lock:
                    replies.append((data[:1].decode(), struct.unpack(">Q", data[1:])[0]))
                    lock.notify_all()

    probe.settimeout(0.2)
    threads = [threading.Thread(target=send, daemon=True), threading.Thread(target=receive, daemon=True)]
    for t in threads:
        t.start()
    gateways = {"X": "10.0.1.20", "Y": "10.0.1.30"}
    current = "X"
    # Wait until the probe gets through at all (ARP, learning).
    with lock:
        if not lock.wait_for(lambda: any(w == current for w, _ in replies), timeout=15):
            sys.exit("bench-scale: the probe never reached X through the route")
    latencies, api, timeouts = [], [], 0
    warmup = 4
    for i in range(warmup + count):
        target = "Y" if current == "X" else "X"
        t0 = time.perf_counter_ns()
        call("PATCH", f"/v1/routes/{s['route']}", {"next_hop_gateway": gateways[target]})
        t_api = time.perf_counter_ns()

        def arrived():
            return [sent for w, sent in replies if w == target and sent >= t0]

        with lock:
            got = lock.wait_for(arrived, timeout=5)
            first = min(got) if got else None
            replies.clear()
        current = target
        if i < warmup:
            continue
        api.append((t_api - t0) / 1e6)
        if first is None:
            timeouts += 1
            # the route may still move later: wait for it before the next change
            with lock:
                lock.wait_for(lambda: any(w == target for w, _ in replies), timeout=10)
                replies.clear()
            continue
        latencies.append((first - t0) / 1e6)
    stop.set()
    latencies.sort()
    api.sort()

    def pct(values, p):
        return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")

    print(f"{pct(latencies, 0.5):.2f} {pct(latencies, 0.99):.2f} "
          f"{(latencies[-1] if latencies else float('nan')):.2f} {pct(api, 0.5):.2f} {timeouts}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "setup":
        setup(args[0])
    elif cmd == "ports":
        ports(args[0], int(args[1]), int(args[2]))
    elif cmd == "served":
        served(args[0], int(args[1]), float(args[2]), args[3])
    elif cmd == "nsdb-read":
        nsdb_read(args[0])
    elif cmd == "builds":
        builds(args[0])
    elif cmd == "flips":
        flips(args[0], int(args[1]))
    else:
        sys.exit(__doc__)
