"""The measurements behind scripts/bench-bridge (see there)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")
CONNS, SIZE = 50, 32


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_cpu_s(pgid):
    """CPU seconds of every live process in process group `pgid` (php -S and its workers)."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / TICK


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)  # readiness poll of a program being started, not a measurement
    raise RuntimeError(f"nothing on port {port}")


def app(kind):
    port = free_port()
    if kind == "php":
        env = dict(os.environ, PHP_CLI_SERVER_WORKERS="4")
        argv = ["php", "-S", f"127.0.0.1:{port}", "examples/app-bridge/echo.php"]
    else:
        env = dict(os.environ)
        argv = ["target/release/app-echo", str(port)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    wait_port(port)
    return proc, f"http://127.0.0.1:{port}/"


def run(label, app_kind, secs):
    app_proc, flags = None, []
    if app_kind:
        app_proc, url = app(app_kind)
        flags = ["--app", url]
    wssd = subprocess.Popen(["taskset", "-c", "0", "target/release/wssd", "--plain", "--listen", "127.0.0.1:0",
                             "--threads", "1", "--log-level", "error", "--max-connections-per-address", "0", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = next(line.split()[1] for line in wssd.stdout if line.startswith("serving "))
    try:
        app_before = group_cpu_s(app_proc.pid) if app_proc else 0
        out = subprocess.run(["taskset", "-c", "1", "target/release/wssd-bench", "--json", "echo", url,
                              "--conns", str(CONNS), "--size", str(SIZE), "--secs", str(secs),
                              "--pid", str(wssd.pid)], capture_output=True, text=True, check=True)
        app_after = group_cpu_s(app_proc.pid) if app_proc else 0
        row = json.loads(out.stdout)
        n = row["msgs_per_s"] * secs
        row["app_cpu_us_per_msg"] = round((app_after - app_before) * 1e6 / n, 1) if app_proc and n else None
        row["label"] = label
        return row
    finally:
        wssd.kill()
        wssd.wait()
        if app_proc:
            os.killpg(app_proc.pid, signal.SIGTERM)
            app_proc.wait()


def main():
    secs = int(sys.argv[1])
    rows = [run("wssd echo (no app)", None, secs),
            run("--app, minimal app (hyper)", "minimal", secs),
            run("--app, PHP app (php -S, 4 workers)", "php", secs)]
    base = rows[0]["p99_us"]
    print(f"| {CONNS} conns, {SIZE} B echo | msgs/s | p50 us | p99 us | p99 added over echo | wssd CPU us/msg | app CPU us/msg | load CPU us/msg | cores busy: wssd + app + load | bound by |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        added = "" if r is rows[0] else f"{r['p99_us'] - base}"
        cores = [r["msgs_per_s"] * (x or 0) / 1e6 for x in
                 (r["server_cpu_us_per_msg"], r["app_cpu_us_per_msg"], r["load_cpu_us_per_msg"])]
        # wssd and the load generator each have a core of their own; the app shares both.
        if cores[2] >= 0.9:
            bound = "the load generator (not a result for wssd)"
        elif cores[0] >= 0.9:
            bound = "wssd's core"
        elif sum(cores) >= 1.8:
            bound = "the machine (2 cores)"
        else:
            bound = "the app"
        print(f"| {r['label']} | {r['msgs_per_s']:.0f} | {r['p50_us']} | {r['p99_us']} | {added} | "
              f"{r['server_cpu_us_per_msg']} | {r['app_cpu_us_per_msg'] or ''} | {r['load_cpu_us_per_msg']} | "
              f"{cores[0]:.2f} + {cores[1]:.2f} + {cores[2]:.2f} | {bound} |")
    os.makedirs("target/bench", exist_ok=True)
    with open("target/bench/bridge.json", "w") as f:
        json.dump(rows, f, indent=1)


main()
