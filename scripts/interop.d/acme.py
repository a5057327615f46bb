"""ACME with Let's Encrypt's test server: Debian's `pebble`, with `pebble-challtestsrv` as its DNS
(every name resolves to 127.0.0.1), validating the TLS-ALPN-01 challenge by connecting to wssd's
own port. Chromium (which trusts Pebble's root, fetched from its management port) gets `ok` over
wss by the test name; a restart reuses the cached certificate; a renewal swaps the certificate
while a connection opened before it keeps echoing.

Usage: WSSD=target/debug/wssd python acme.py
"""
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import urllib.request

from websockets.sync.client import connect

from harness import TMP, WSSD, Served, case, free_port, tally, wait_for_port
from chromium import browser

NAME = "acme.wssd.test"


class Pebble:
    """pebble-challtestsrv (DNS) and pebble on free loopback ports, validating TLS-ALPN-01 on
    `tls_port`; certificates it issues live `validity` seconds. Pebble's root is new at each
    start: `root` is its file, fetched from the management port."""

    def __init__(self, tls_port, validity, resolves=True):
        self.dir = os.path.join(TMP, f"pebble-{tls_port}")
        os.makedirs(self.dir, exist_ok=True)
        self.https_ca = self._https_certificate()
        acme, manage, dns, dns_manage = free_port(), free_port(), free_port(), free_port()
        config = {"pebble": {
            "listenAddress": f"127.0.0.1:{acme}", "managementListenAddress": f"127.0.0.1:{manage}",
            "certificate": os.path.join(self.dir, "cert.pem"), "privateKey": os.path.join(self.dir, "key.pem"),
            "httpPort": free_port(), "tlsPort": tls_port, "ocspResponderURL": "",
            "externalAccountBindingRequired": False, "certificateValidityPeriod": validity,
        }}
        with open(os.path.join(self.dir, "config.json"), "w") as f:
            json.dump(config, f)
        # No IPv6 answers: Pebble would validate over ::1, where wssd does not listen.
        self.dns = subprocess.Popen(
            ["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1" if resolves else "", "-defaultIPv6", "",
             "-dns01", f"127.0.0.1:{dns}", "-http01", "", "-https01", "", "-tlsalpn01", "",
             "-management", f"127.0.0.1:{dns_manage}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # No random validation sleeps; no rejected nonces (rustls-acme does not retry a bad one).
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
        self.log = open(os.path.join(self.dir, "pebble.log"), "w")
        self.proc = subprocess.Popen(
            ["pebble", "-config", os.path.join(self.dir, "config.json"), "-dnsserver", f"127.0.0.1:{dns}"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_port(acme, self.proc)
        wait_for_port(manage, self.proc)
        self.directory = f"https://localhost:{acme}/dir"
        context = ssl.create_default_context(cafile=self.https_ca)
        with urllib.request.urlopen(f"https://localhost:{manage}/roots/0", context=context, timeout=10) as r:
            self.root = os.path.join(self.dir, "root.pem")
            with open(self.root, "wb") as f:
                f.write(r.read())

    def _https_certificate(self):
        """Pebble's own HTTPS certificate for localhost (Debian's package ships none)."""
        ca = os.path.join(self.dir, "ca.pem")
        if os.path.exists(ca):
            return ca
        def run(*args):
            subprocess.run(["openssl", *args], cwd=self.dir, check=True, capture_output=True)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=pebble https CA")
        run("req", *ec, "-keyout", "key.pem", "-out", "cert.csr", "-subj", "/CN=localhost")
        with open(os.path.join(self.dir, "ext"), "w") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n")
        run("x509", "-req", "-in", "cert.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "cert.pem", "-days", "2", "-extfile", "ext")
        return ca

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for proc in (self.proc, self.dns):
            proc.kill()
            proc.wait()
        self.log.close()


def wssd_acme(port, pebble, cache, *extra):
    return Served([WSSD, "--listen", f"127.0.0.1:{port}", "--threads", "1", "--acme", NAME,
                   "--acme-directory", pebble.directory, "--acme-ca", pebble.https_ca,
                   "--acme-cache", cache, *extra])


def client(port, root):
    """A websockets client to wss://NAME:port that trusts Pebble's root alone."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return connect(f"wss://{NAME}:{port}/", sock=sock, ssl=ssl.create_default_context(cafile=root),
                   server_hostname=NAME, open_timeout=10, close_timeout=5)


def certificate_of(ws):
    return ws.socket.getpeercert(binary_form=True)


@case("ACME via Pebble: wssd gets a certificate by TLS-ALPN-01 on its own port; Chromium trusting Pebble's root gets ok over wss by the name; a restart reuses the cached certificate, no new order")
def _():
    port = free_port()
    cache = os.path.join(TMP, "acme-cache-1")
    with Pebble(port, validity=3600) as pebble:
        with wssd_acme(port, pebble, cache, "--reply", "ok") as srv:
            srv.wait_for("ACME: no cached certificate for acme.wssd.test: ordering one")
            srv.wait_for("answered the ACME server's TLS-ALPN-01 challenge for acme.wssd.test", seconds=60)
            srv.wait_for("ACME: stored the new certificate for acme.wssd.test", seconds=60)
            result = browser("snippet", f"wss://{NAME}:{port}", ca_file=pebble.root, tag=f"pebble-{port}",
                             resolve=NAME)
            assert result == {"ok": True, "got": [{"text": "ok"}, {"text": "ok"}]}, result
        with wssd_acme(port, pebble, cache, "--reply", "ok") as srv:
            srv.wait_for("ACME: serving the cached certificate for acme.wssd.test")
            with client(port, pebble.root) as ws:
                ws.send("tom")
                assert ws.recv(timeout=10) == "ok"
            srv.wait_for("] close ")
            for text in ("ordering one", "trigger challenge", "answered the ACME server's", "certificate issued"):
                assert srv.count(text) == 0, f"{text!r} after a restart: {srv.log()}"


@case("ACME via Pebble, 20-second certificates: the renewal swaps the certificate for new connections while one opened before keeps echoing")
def _():
    port = free_port()
    cache = os.path.join(TMP, "acme-cache-2")
    with Pebble(port, validity=20) as pebble:
        with wssd_acme(port, pebble, cache) as srv:
            srv.wait_for("ACME: stored the new certificate for acme.wssd.test", seconds=60)
            with client(port, pebble.root) as before:
                first = certificate_of(before)
                before.send("one")
                assert before.recv(timeout=10) == "one"
                # Renewal is due a third of the lifetime before the end: after about 13 s.
                srv.wait_for("ACME: stored the new certificate for acme.wssd.test", count=2, seconds=60)
                with client(port, pebble.root) as after:
                    assert certificate_of(after) != first, "a new connection still gets the old certificate"
                    after.send("two")
                    assert after.recv(timeout=10) == "two"
                before.send("three")
                assert before.recv(timeout=10) == "three"
                assert certificate_of(before) == first


@case("ACME via Pebble, failures: port 443 (Pebble's validation port) not reaching wssd, and a domain that does not resolve, are each logged with their fix")
def _():
    port, elsewhere = free_port(), free_port()
    with Pebble(elsewhere, validity=3600) as pebble:
        with wssd_acme(port, pebble, os.path.join(TMP, "acme-cache-3")) as srv:
            srv.wait_for("ACME: ordering a certificate for acme.wssd.test failed", seconds=60)
            line = next(l for l in srv.lines if "ordering a certificate" in l and "failed" in l)
            assert "could not validate the challenge" in line and "could not connect to port 443" in line, line
    with Pebble(port, validity=3600, resolves=False) as pebble:
        with wssd_acme(port, pebble, os.path.join(TMP, "acme-cache-4")) as srv:
            srv.wait_for("ACME: ordering a certificate for acme.wssd.test failed", seconds=60)
            line = next(l for l in srv.lines if "ordering a certificate" in l and "failed" in l)
            assert "the domain does not resolve to this machine" in line and "DNS A" in line, line


if __name__ == "__main__":
    sys.exit(tally())
