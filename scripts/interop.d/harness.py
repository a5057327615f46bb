"""Shared by the interop suites: run the real wssd binary, record cases, print the tally."""
import asyncio
import os
import socket
import subprocess
import tempfile
import threading
import time

WSSD = os.environ.get("WSSD", "target/debug/wssd")
TMP = tempfile.mkdtemp(prefix="wssd-interop-")
results = []
# Notified whenever any served program logs a line; guards every `Served.lines`.
ARRIVED = threading.Condition()


def wait_until(predicate, what, seconds=30):
    """Blocks until `predicate()` holds, re-checking as log lines arrive; fails after `seconds`."""
    with ARRIVED:
        if not ARRIVED.wait_for(predicate, seconds):
            raise AssertionError(f"not seen within {seconds} s: {what}")


class Served:
    """A program that prints `serving URL` once it listens; its stderr lines are collected by
    a thread (wait_for blocks on them); stopped on exit."""

    def __init__(self, argv):
        self.lines = []
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._collect, daemon=True).start()
        for line in self.proc.stdout:  # blocks until the URL line, or EOF on exit
            if line.startswith("serving "):
                self.url = line.split()[1]
                self.port = int(self.url.split(":")[2].split("/")[0])
                threading.Thread(target=self.proc.stdout.read, daemon=True).start()
                return
        raise RuntimeError(f"{argv[0]} exited with {self.proc.wait()} before serving: {self.log()}")

    def _collect(self):
        for line in self.proc.stderr:
            with ARRIVED:
                self.lines.append(line.rstrip("\n"))
                ARRIVED.notify_all()

    def log(self):
        with ARRIVED:
            return "\n".join(self.lines)

    def count(self, text):
        """How many log lines so far contain `text`."""
        with ARRIVED:
            return sum(text in line for line in self.lines)

    def wait_for(self, text, count=1, seconds=30):
        """Blocks until `count` log lines contain `text`; fails after `seconds`."""
        wait_until(lambda: self.count(text) >= count, f"{count} lines with {text!r} in {self.log()}", seconds)

    def opens(self):
        """The `open ...` log lines so far."""
        with ARRIVED:
            return [line for line in self.lines if "] open " in line]

    def stop(self):
        self.proc.kill()
        self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Wssd(Served):
    """The wssd binary on an ephemeral loopback port."""

    def __init__(self, *args):
        super().__init__([WSSD, "--listen", "127.0.0.1:0", "--threads", "1", *args])


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
