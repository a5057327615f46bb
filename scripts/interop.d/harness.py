"""Shared by the interop suites: run the real wssd binary, record cases, print the tally."""
import asyncio
import os
import socket
import subprocess
import tempfile
import time

WSSD = os.environ.get("WSSD", "target/debug/wssd")
TMP = tempfile.mkdtemp(prefix="wssd-interop-")
results = []


class Wssd:
    """The binary on an ephemeral loopback port, its stderr log in a file; stopped on exit."""

    count = 0

    def __init__(self, *args):
        Wssd.count += 1
        self.log_path = os.path.join(TMP, f"wssd-{Wssd.count}.log")
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [WSSD, "--listen", "127.0.0.1:0", "--threads", "1", *args],
            stdout=subprocess.PIPE, stderr=self.log_file, text=True)
        for line in self.proc.stdout:  # blocks until the URL line, or EOF on exit
            if line.startswith("serving "):
                self.url = line.split()[1]
                self.port = int(self.url.split(":")[2].split("/")[0])
                return
        raise RuntimeError(f"wssd exited with {self.proc.wait()} before serving: {self.log()}")

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def opens(self):
        """The `open ...` log lines. Each is written before the session starts, so after a
        client's first echo it is already in the file."""
        return [line for line in self.log().splitlines() if "] open " in line]

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.log_file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def self_signed_dir():
    """A directory with ca.pem, cert.pem and key.pem, made by `wssd --self-signed-dir`."""
    d = os.path.join(TMP, "ca")
    if not os.path.exists(os.path.join(d, "ca.pem")):
        Wssd("--self-signed-dir", d).stop()
    return d


def free_port():
    """A loopback port that was free a moment ago (for proxies, which cannot report theirs)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, seconds=15):
    """Waits until something accepts on 127.0.0.1:port; fails if `proc` exits or time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)  # readiness poll of an external program, not test synchronisation
    raise RuntimeError(f"nothing listening on {port} after {seconds} s")


def case(name):
    def run(fn):
        try:
            result = fn()
            if asyncio.iscoroutine(result):
                asyncio.run(asyncio.wait_for(result, timeout=30))
            results.append(True)
            print(f"PASS {name}", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported, none hidden
            results.append(False)
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
    return run


def tally():
    """Prints `N passed, N failed` and returns the exit code."""
    passed = sum(results)
    failed = len(results) - passed
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0
