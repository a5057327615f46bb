"""A WebSocket client written by nobody here (PyPI `websockets`) against the real wssd binary.

Usage: python websockets_client.py PATH_TO_WSSD
Prints one PASS/FAIL line per case, then `N passed, N failed`; exits 1 on any failure.
"""
import asyncio
import os
import ssl
import subprocess
import sys
import tempfile

import websockets

WSSD = sys.argv[1]
results = []


class Wssd:
    """The binary on an ephemeral loopback port; stopped on exit."""

    def __init__(self, *args):
        self.proc = subprocess.Popen(
            [WSSD, "--listen", "127.0.0.1:0", "--threads", "1", *args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for line in self.proc.stdout:  # blocks until the URL line, or EOF on exit
            if line.startswith("serving "):
                self.url = line.split()[1]
                return
        raise RuntimeError(f"wssd exited with {self.proc.wait()} before serving")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def case(name):
    def run(fn):
        try:
            asyncio.run(asyncio.wait_for(fn(), timeout=20))
            results.append(True)
            print(f"PASS {name}")
        except Exception as e:  # noqa: BLE001 - every failure is reported, none hidden
            results.append(False)
            print(f"FAIL {name}: {type(e).__name__}: {e}")
    return run


tmp = tempfile.mkdtemp(prefix="wssd-interop-")
ca_dir = os.path.join(tmp, "ca")


def trusting(ca_file):
    return ssl.create_default_context(cafile=ca_file)


@case("wss echo: send tom, get tom back (certificate verified against the local CA)")
async def _():
    with Wssd("--self-signed-dir", ca_dir) as srv:
        async with websockets.connect(srv.url, ssl=trusting(os.path.join(ca_dir, "ca.pem"))) as ws:
            await ws.send("tom")
            got = await ws.recv()
            assert got == "tom", got
            await ws.send(b"\x00\x01\xff")
            got = await ws.recv()
            assert got == b"\x00\x01\xff", got


@case("wss --reply ok: send tom, get ok")
async def _():
    with Wssd("--self-signed-dir", ca_dir, "--reply", "ok") as srv:
        async with websockets.connect(srv.url, ssl=trusting(os.path.join(ca_dir, "ca.pem"))) as ws:
            await ws.send("tom")
            got = await ws.recv()
            assert got == "ok", got


@case("wss with an untrusted certificate is refused by the client (the test can fail)")
async def _():
    with Wssd("--self-signed") as srv:  # a fresh CA that the client does not trust
        try:
            async with websockets.connect(srv.url, ssl=trusting(os.path.join(ca_dir, "ca.pem"))):
                pass
        except ssl.SSLCertVerificationError:
            return
        raise AssertionError("connected without trusting the certificate")


@case("ws --plain --path /wss: echo on the path, 404 elsewhere")
async def _():
    with Wssd("--plain", "--path", "/wss") as srv:
        assert srv.url.endswith("/wss"), srv.url
        async with websockets.connect(srv.url) as ws:
            await ws.send("tom")
            got = await ws.recv()
            assert got == "tom", got
        try:
            async with websockets.connect(srv.url[: -len("/wss")] + "/other"):
                pass
        except websockets.exceptions.InvalidStatus as e:
            assert e.response.status_code == 404, e.response.status_code
            return
        raise AssertionError("a wrong path was accepted")


@case("close code and reason reach the server and come back in the close handshake")
async def _():
    with Wssd("--self-signed-dir", ca_dir) as srv:
        ws = await websockets.connect(srv.url, ssl=trusting(os.path.join(ca_dir, "ca.pem")))
        await ws.close(code=4000, reason="bye")
        assert ws.close_code == 4000, ws.close_code
        assert ws.close_reason == "bye", ws.close_reason


passed = sum(results)
failed = len(results) - passed
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
