"""A WebSocket client written by nobody here (PyPI `websockets`) against the real wssd binary.

Usage: WSSD=target/debug/wssd python websockets_client.py
Prints one PASS/FAIL line per case, then `N passed, N failed`; exits 1 on any failure.
"""
import os
import ssl
import subprocess
import sys

import websockets

from harness import Wssd, case, self_signed_dir, tally

ca_dir = self_signed_dir()


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
            # wssd's log says that the client refused the certificate, and what to run.
            srv.wait_for("TLS handshake failed: the client")
            assert "wssd probe" in srv.log(), srv.log()
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


def curl(url):
    """(status, body) from real curl, which knows nothing of WebSockets."""
    out = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", url], capture_output=True, text=True, timeout=20)
    body, _, status = out.stdout.rpartition("\n")
    return int(status), body


@case("curl http:// against the wss port: 400 whose body says wss://")
def _():
    with Wssd("--self-signed-dir", ca_dir, "--path", "/wss") as srv:
        status, body = curl(f"http://localhost:{srv.port}/wss")
        assert status == 400, status
        assert f"This port speaks TLS: connect with wss://localhost:{srv.port}/wss" in body, body


@case("curl of the ws path without Upgrade: 426; with --test-page: the HTML page")
def _():
    with Wssd("--plain", "--path", "/wss") as srv:
        status, body = curl(srv.url.replace("ws://", "http://"))
        assert status == 426 and "new WebSocket(" in body, (status, body)
    with Wssd("--plain", "--path", "/wss", "--test-page") as srv:
        status, body = curl(srv.url.replace("ws://", "http://"))
        assert status == 200 and "<title>wssd test page</title>" in body, (status, body)


if __name__ == "__main__":
    sys.exit(tally())
