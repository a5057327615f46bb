"""The measurements behind scripts/bench-deflate (see there)."""
import asyncio
import json
import os
import resource
import subprocess
import sys
import time

from websockets.asyncio.client import connect

WSSD = "target/release/wssd"
TICK = os.sysconf("SC_CLK_TCK")
# A 1 KiB JSON message, as a chat or dashboard sends: repeated keys, varied values.
MESSAGE = json.dumps([{"user": f"user{i}", "room": "lobby", "seq": i * 7919 % 1000,
                       "text": f"message number {i} says hello"} for i in range(12)])  # 1,046 bytes


def start(*flags):
    proc = subprocess.Popen(["taskset", "-c", "0", WSSD, "--plain", "--listen", "127.0.0.1:0",
                             "--threads", "1", "--log-level", "warn", "--max-connections", "20000",
                             "--max-connections-per-address", "0",
                             *flags], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("serving "):
            return proc, line.split()[1]
    raise RuntimeError("wssd did not start")


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wire_bytes():
    """Bytes sent over loopback so far, both ways, with TCP/IP headers (/proc/net/dev)."""
    with open("/proc/net/dev") as f:
        line = next(line for line in f if line.strip().startswith("lo:"))
    return int(line.split(":", 1)[1].split()[8])


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1])


def own_cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def echo_run(url, compress, conns, secs):
    """Each connection sends MESSAGE and waits for its echo, for `secs` after 1 s of warm-up."""
    kwargs = {} if compress else {"compression": None}
    sockets = [await connect(url, max_size=None, **kwargs) for _ in range(conns)]
    agreed = sockets[0].response.headers.get("Sec-WebSocket-Extensions")
    count = 0
    stop = time.monotonic() + 1 + secs
    measuring = False

    async def loop(ws):
        nonlocal count
        while time.monotonic() < stop:
            await ws.send(MESSAGE)
            assert await ws.recv() == MESSAGE
            if measuring:
                count += 1
    tasks = [asyncio.create_task(loop(ws)) for ws in sockets]
    await asyncio.sleep(1)
    measuring = True
    return sockets, tasks, agreed, lambda: count


async def measure_echo(compress, secs):
    flags = ["--permessage-deflate"] if compress else []
    proc, url = start(*flags)
    try:
        sockets, tasks, agreed, count = await echo_run(url, compress, 50, secs)
        cpu0, out0, me0, n0, t0 = cpu_s(proc.pid), wire_bytes(), own_cpu_s(), count(), time.monotonic()
        await asyncio.gather(*tasks)
        cpu1, out1, me1, n1, t1 = cpu_s(proc.pid), wire_bytes(), own_cpu_s(), count(), time.monotonic()
        for ws in sockets:
            await ws.close()
        n = n1 - n0
        return {"compression": agreed or "none", "msgs_per_s": n / (t1 - t0),
                "server_us_per_msg": (cpu1 - cpu0) / n * 1e6, "load_us_per_msg": (me1 - me0) / n * 1e6,
                "wire_bytes_per_echo": (out1 - out0) / n}
    finally:
        proc.kill()
        proc.wait()


async def measure_idle(compress, conns=2000):
    flags = ["--permessage-deflate"] if compress else []
    proc, url = start(*flags)
    try:
        before = rss_kib(proc.pid)
        kwargs = {} if compress else {"compression": None}
        sockets = []
        for _ in range(conns):
            ws = await connect(url, max_size=None, **kwargs)
            await ws.send(MESSAGE)  # one compressed message each way, then idle
            assert await ws.recv() == MESSAGE
            sockets.append(ws)
        after = rss_kib(proc.pid)
        for ws in sockets:
            await ws.close()
        return (after - before) * 1024 / conns
    finally:
        proc.kill()
        proc.wait()


async def main(secs):
    rows = [await measure_echo(False, secs), await measure_echo(True, secs)]
    idle = [await measure_idle(False), await measure_idle(True)]
    print(f"1 KiB JSON echo over ws, 50 connections, {secs} s, server on CPU 0, Python websockets load on CPU 1")
    print("| compression | msgs/s | server CPU per msg | load CPU per msg | bytes on the wire per echo | idle memory per connection |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row, idle_bytes in zip(rows, idle):
        name = "permessage-deflate" if row["compression"] != "none" else "none"
        print(f"| {name} | {row['msgs_per_s']:.0f} | {row['server_us_per_msg']:.1f} µs | "
              f"{row['load_us_per_msg']:.1f} µs | {row['wire_bytes_per_echo']:.0f} B | {idle_bytes / 1024:.1f} KiB |")
    print("Bytes on the wire: the message and its echo, with frame, TCP and IP headers (loopback).")
    print("Load-bound rows (the load's CPU per message above the server's) give the server's cost per")
    print("message, not its ceiling.")


asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
