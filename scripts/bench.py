"""The benchmark matrix behind scripts/bench (see there)."""
import json
import os
import subprocess
import sys

SECS = sys.argv[1] if len(sys.argv) > 1 else "5"
REL = "target/release"
SERVERS = {
    "wssd": lambda tls: [f"{REL}/wssd", "--listen", "127.0.0.1:0", "--threads", "1", "--log-level", "warn",
                         "--max-connections-per-address", "0"]
    + ([] if tls else ["--plain"]),
    "fastwebsockets": lambda tls: [f"{REL}/peer-fastwebsockets", "127.0.0.1:0"] + ([] if tls else ["--plain"]),
    "tokio-tungstenite": lambda tls: [f"{REL}/peer-tungstenite", "127.0.0.1:0"] + ([] if tls else ["--plain"]),
}
# wssd with its own TLS record layer (an opt-in: README, "TLS records"), beside the default's rustls
# records; over plain ws it is the same server.
SERVERS["wssd --own-records"] = lambda tls: [*SERVERS["wssd"](tls), "--own-records"]
# WSSD_BASE=/path/to/another/wssd adds a column for that build (today's main, say), to compare
# before and after a change in one run; it gets the flags every wssd build knows.
if os.environ.get("WSSD_BASE"):
    SERVERS["wssd (base)"] = lambda tls: [os.environ["WSSD_BASE"], "--listen", "127.0.0.1:0", "--threads", "1",
                                          "--log-level", "warn"] + ([] if tls else ["--plain"])
# BENCH_SERVERS="wssd,wssd (base),fastwebsockets" runs only those (wssd always).
if os.environ.get("BENCH_SERVERS"):
    keep = {"wssd", *os.environ["BENCH_SERVERS"].split(",")}
    SERVERS = {k: v for k, v in SERVERS.items() if k in keep}
# (connections, message size in bytes, messages in flight per connection): ping-pong, then pipelined.
ECHO = [(100, 32, 1), (500, 1024, 1), (200, 16384, 1), (100, 32, 16), (100, 1024, 8)]
# Handshake runs swing most on a VM (2x between runs minutes apart): each server runs this many
# times, the servers taking turns, and its run with the median server CPU per handshake is reported.
HANDSHAKE_ROUNDS = 5
# Ping-pong echo swings too (the same binary measured 8.0 and 11.2 us per 32 B message minutes
# apart; fastwebsockets at 500 x 1 KiB ran at 12.3 to 12.5 or at 13.7 to 16.7 us in eight
# alternating rounds): those rows are also the median of this many runs per server, taking
# turns. Pipelined rows, where the servers are several times apart, run once.
PING_PONG_ROUNDS = 5


def cell(value, load_bound=False):
    """A table cell: a figure, or n/a; a load-bound rate is shown but marked, not a result."""
    if value is None:
        return "n/a"
    return f"{value:g} (load-bound)" if load_bound else f"{value:g}"


def run(server, tls, bench_args):
    """Starts `server` pinned to CPU 0, runs wssd-bench pinned to CPU 1, returns its JSON."""
    proc = subprocess.Popen(["taskset", "-c", "0", *SERVERS[server](tls)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = next(line.split()[1] for line in proc.stdout if line.startswith("serving "))
        out = subprocess.run(["taskset", "-c", "1", f"{REL}/wssd-bench", "--json", *bench_args[:1], url,
                              *bench_args[1:], "--pid", str(proc.pid)],
                             capture_output=True, text=True, timeout=300, check=True)
        return json.loads(out.stdout)
    finally:
        proc.kill()
        proc.wait()


# A ping-pong or handshake run in which neither core was busy this share of the window (percent)
# was held back by neither program but by the machine (a VM's CPUs taken away for a moment):
# it is run again, at most RETRIES more times, and marked if it still was.
STALL_PCT = 85
RETRIES = 2


def stalled(report):
    """Whether neither the server's core nor the load generator's was busy STALL_PCT of the run."""
    return report["server_cpu_pct"] < STALL_PCT and report["load_cpu_pct"] < STALL_PCT


def steady_run(server, tls, bench_args):
    """`run`, again while it stalled (at most RETRIES more times); the report says if it still did."""
    for _ in range(RETRIES + 1):
        report = run(server, tls, bench_args)
        if not stalled(report):
            break
        print(f"stalled, again: {server} {' '.join(bench_args[:-2])}", file=sys.stderr, flush=True)
    report["stalled"] = stalled(report)
    return report


def median_run(reports, key):
    """The report whose `key` is the median of `reports`: one run, so that its figures agree."""
    return sorted(reports, key=lambda r: r[key])[len(reports) // 2]


def row(rows, name, measure, results, value, better):
    """A row of one figure per server, `value(report)`; `better` is higher, lower or info."""
    rows.append((name, measure, {s: value(r) for s, r in results.items()}, better, set()))


def cpu_shares(report):
    """The server's and the load generator's share of their core, in percent."""
    mark = " (stalled)" if report.get("stalled") else ""
    return f"{report['server_cpu_pct']:g} / {report['load_cpu_pct']:g}{mark}"


def rate(rows, name, measure, results, key):
    """A rate row; a server whose run was load-bound has its cell marked and no ratio."""
    values = {s: r[key] for s, r in results.items()}
    bound = {s for s, r in results.items() if r.get("load_bound")}
    rows.append((name, measure, values, "higher", bound))


rows = []
for tls in (True, False):
    scheme = "wss" if tls else "ws"
    for conns, size, depth in ECHO:
        name = f"{scheme} echo {conns} x {size} B" + (f", {depth} in flight" if depth > 1 else "")
        args = ["echo", "--conns", str(conns), "--size", str(size), "--depth", str(depth), "--secs", SECS]
        runs = {s: [] for s in SERVERS}
        for _ in range(PING_PONG_ROUNDS if depth == 1 else 1):
            for s in SERVERS:
                # Pipelined runs leave both cores idle part of the time by their nature.
                runs[s].append(steady_run(s, tls, args) if depth == 1 else run(s, tls, args))
        results = {s: median_run(r, "server_cpu_us_per_msg") for s, r in runs.items()}
        rate(rows, name, "msgs/s", results, "msgs_per_s")
        row(rows, name, "server CPU us/msg", results, lambda r: r["server_cpu_us_per_msg"], "lower")
        row(rows, name, "load generator CPU us/msg", results, lambda r: r["load_cpu_us_per_msg"], "info")
        row(rows, name, "server / load CPU %", results, cpu_shares, "info")
        row(rows, name, "p99 us", results, lambda r: r["p99_us"], "lower")
        print(f"done: {name}", file=sys.stderr, flush=True)
    runs = {s: [] for s in SERVERS}
    for _ in range(HANDSHAKE_ROUNDS):
        for s in SERVERS:
            runs[s].append(steady_run(s, tls, ["handshakes", "--concurrency", "32", "--secs", SECS]))
    results = {s: median_run(r, "server_cpu_us_per_handshake") for s, r in runs.items()}
    name = f"{scheme} handshakes"
    rate(rows, name, "per s", results, "handshakes_per_s")
    row(rows, name, "server CPU us/handshake", results, lambda r: r["server_cpu_us_per_handshake"], "lower")
    row(rows, name, "load generator CPU us/handshake", results, lambda r: r["load_cpu_us_per_handshake"], "info")
    row(rows, name, "server / load CPU %", results, cpu_shares, "info")
    results = {s: run(s, tls, ["idle", "--conns", "2000"]) for s in SERVERS}
    row(rows, f"{scheme} idle 2,000 conns", "RSS bytes/conn", results, lambda r: r["bytes_per_conn"], "lower")
    print(f"done: {scheme} handshakes and idle", file=sys.stderr, flush=True)

# Scale: 15,000 idle wss connections to wssd, each waiting for one heartbeat ping.
COLUMNS = list(SERVERS)
wssd_cmd = SERVERS["wssd"]
SERVERS["wssd-scale"] = lambda tls: wssd_cmd(tls) + ["--max-connections", "20000", "--ping-interval", "5"]
scale = run("wssd-scale", True, ["idle", "--conns", "15000", "--ping-wait", "12"])
scale_line = (f"Scale: wssd held 15,000 idle wss connections at {scale['rss_after_kib'] / 1024:.0f} MiB RSS "
              f"({scale['bytes_per_conn']:g} bytes each); {scale['pinged']} of them got their heartbeat ping "
              f"(--ping-interval 5) within 12 s.")
print("done: scale", file=sys.stderr, flush=True)

binary = os.path.getsize(f"{REL}/wssd")
small = os.path.getsize("target/small/wssd")
def count_crates(package):
    out = subprocess.run(["cargo", "tree", "-e", "normal", "--prefix", "none", "-p", package],
                         capture_output=True, text=True, check=True).stdout
    return len({line.removesuffix(" (*)") for line in out.split("\n")} - {""})


crates = count_crates("wssd")  # the library with its default features, as a dependent gets it
crates_cli = count_crates("wssd-cli")  # the binary, with every feature

others = [c for c in COLUMNS if c != "wssd"]
pairs = [("wssd", o) for o in others]
if "wssd --own-records" in COLUMNS and "fastwebsockets" in COLUMNS:
    pairs.append(("wssd --own-records", "fastwebsockets"))
lines = ["| scenario | measure | " + " | ".join(COLUMNS) + " | " + " | ".join(f"{a} / {b}" for a, b in pairs) + " |",
         "| --- | --- | " + " | ".join("---:" for _ in COLUMNS + pairs) + " |"]
for name, measure, values, better, bound in rows:
    def ratio(ours, peer):
        w, p = values[ours], values[peer]
        if better == "info" or w is None or not p:
            return ""
        if {ours, peer} & bound:
            return "n/a (load-bound)"
        return f"{w / p:.2f}"
    cells = [v if isinstance(v := values[s], str) else cell(v, s in bound) for s in COLUMNS]
    how = "" if better == "info" else f" ({better} is better)"
    lines.append(f"| {name} | {measure}{how} | " + " | ".join(cells) + " | "
                 + " | ".join(ratio(a, b) for a, b in pairs) + " |")
lines.append("")
lines.append(scale_line)
lines.append("")
lines.append(f"wssd release binary (wssd-cli, every feature), stripped: {binary} bytes ({binary / 1048576:.2f} MiB), "
             f"{crates_cli} crates; the library with its default features: {crates} crates. "
             f"Serving-only build (`--profile small`, no default features), stripped: {small} bytes "
             f"({small / 1048576:.2f} MiB; target 1.8 MiB).")
table = "\n".join(lines)
print(table)
with open("target/bench/table.md", "w") as f:
    f.write(table + "\n")
with open("target/bench/results.json", "w") as f:
    json.dump({"rows": [{"scenario": r[0], "measure": r[1], "values": r[2]} for r in rows],
               "scale": scale, "binary_bytes": binary, "small_serving_binary_bytes": small, "crates": crates, "crates_cli": crates_cli}, f, indent=1)
