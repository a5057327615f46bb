"""TLS conformance: tlsfuzzer (../shared/tlsfuzzer, LGPL-2.1) against the wssd binary and against
plain rustls with wssd's own configuration (examples/rustls_reference: futures-rustls' TlsAcceptor,
then wssd's plain WebSocket acceptor), both with one RSA certificate, as the scripts expect.

A script's case fails when wssd fails a conversation that the reference passes (and still does
in each of three runs of that conversation alone, where rustls passes each; EXPECTED names
differences on purpose, with the reason), when a connection's handling panics, or when either
server is gone after it (a TLS handshake must still succeed). One line per script gives both
tallies; the table at the end is the one the README and the issue notes quote."""
import os
import re
import socket
import ssl
import subprocess
import sys

from harness import TMP, Served, Wssd, case

TLSFUZZER = os.path.abspath(os.path.join(os.path.dirname(__file__), "../../../shared/tlsfuzzer"))
RUN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tlsfuzzer_run.py")
REFERENCE = os.path.abspath(os.path.join(os.path.dirname(__file__), "../../target/debug/examples/rustls_reference"))
# ECDHE with AES-128-GCM and Extended Master Secret for the TLS 1.2 scripts (rustls serves no
# RSA key exchange and no CBC suite).
TLS12 = ["-d", "-M", "-C", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]
SCRIPTS = {
    "test-tls13-keyupdate": [],
    "test-tls13-record-layer-limits": [],
    "test-tls13-zero-length-data": [],
    "test-tls13-zero-content-type": [],
    "test-tls13-record-padding": [],
    "test-tls13-ccs": [],
    "test-tls13-finished": [],
    "test-tls13-large-number-of-extensions": [],
    "test-tls13-connection-abort": [],
    "test-tls13-signature-algorithms": [],
    "test-large-hello": ["-d", "-M"],
    "test-client-hello-max-size": ["-d", "-M"],
    "test-record-layer-fragmentation": TLS12,
    "test-renegotiation-disabled": ["-d", "-C", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
    "test-zero-length-data": TLS12,
    "test-fuzzed-ciphertext": TLS12,
}
# Per server, the (script, conversation) pairs where it differs from rustls on purpose, with
# the reason. wssd's own record layer (--own-records, an opt-in) refuses a KeyUpdate split
# over two records (RFC 8446 section 5.1 allows it; rustls joins the parts).
EXPECTED = {
    "wssd --own-records": {
        ("test-tls13-keyupdate", "fragmented keyupdate msg"):
            "a KeyUpdate split over records is refused, not joined",
    },
}


def certificate():
    """An RSA 2048 leaf for localhost (the scripts offer RSA signature schemes only)."""
    cert, key = os.path.join(TMP, "rsa-cert.pem"), os.path.join(TMP, "rsa-key.pem")
    if not os.path.exists(cert):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost",
                        "-addext", "basicConstraints=critical,CA:FALSE"],
                       check=True, capture_output=True)
    return cert, key


def run_script(script, port, *conversations):
    """Runs `script` (only `conversations`, if named) against 127.0.0.1:port; returns (passed,
    total, failed conversation names)."""
    env = dict(os.environ, PYTHONPATH=TLSFUZZER)
    argv = [sys.executable, RUN, script, "-h", "127.0.0.1", "-p", str(port), *SCRIPTS[script], *conversations]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env).stdout
    tally = dict(re.findall(r"^(TOTAL|PASS|FAIL): (\d+)$", out, re.M))
    if "TOTAL" not in tally:
        raise AssertionError(f"{script} printed no summary: {out[-2000:]}")
    failed = set(re.findall(r"^\t'(.*)'$", out.split("FAILED:")[-1], re.M)) if "FAILED:" in out else set()
    return int(tally["PASS"]), int(tally["TOTAL"]), failed


def always_worse(script, conversation, wssd, ref, tries=3):
    """Whether wssd fails `conversation` in each of `tries` runs of it alone and rustls passes it
    in each: some conversations send random bytes (a random extension payload may or may not
    decode), or race the server's close against the client's writes, and fail now and then
    against either server."""
    for _ in range(tries):
        if not run_script(script, wssd.port, conversation)[2] or run_script(script, ref.port, conversation)[2]:
            return False
    return True


def alive(server):
    """The server still runs and completes a TLS handshake."""
    if server.proc.poll() is not None:
        return False
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="localhost"):
                return True
    except OSError:
        return False


cert, key = certificate()
table = []
with Wssd("--cert", cert, "--key", key) as wssd, \
        Wssd("--cert", cert, "--key", key, "--own-records") as own, \
        Served([REFERENCE, "127.0.0.1:0", cert, key]) as ref:
    # The 12-byte probe: 2 bytes of a ClientHello, then another record type, in one write.
    @case("tls: the 12-byte probe (four variants) leaves wssd serving")
    def _():
        for tail in [b"\x17\x03\x03\x00\x00", b"\x15\x03\x03\x00\x02\x02\x28", b"\x14\x03\x03\x00\x01\x01",
                     b"\x18\x03\x03\x00\x01\x00"]:
            with socket.create_connection(("127.0.0.1", wssd.port), timeout=10) as s:
                s.sendall(b"\x16\x03\x01\x00\x02\x01\x00" + tail)
                s.shutdown(socket.SHUT_WR)
                while s.recv(4096):
                    pass
        assert alive(wssd), wssd.log()[-3000:]

    for script in SCRIPTS:
        @case(f"tlsfuzzer {script}: wssd, and wssd --own-records, pass what plain rustls passes")
        def _(script=script):
            theirs = run_script(script, ref.port)
            row = [script, theirs]
            problems = []
            for name, server in [("wssd", wssd), ("wssd --own-records", own)]:
                ours = run_script(script, server.port)
                row.append(ours)
                if not alive(server):
                    problems.append(f"{name} stopped serving: {server.log()[-3000:]}")
                    continue
                expected = EXPECTED.get(name, {})
                worse = sorted(c for c in ours[2] - theirs[2]
                               if (script, c) not in expected and always_worse(script, c, server, ref))
                if worse:
                    problems.append(f"{name} fails what rustls passes, each of 3 tries: {worse}")
                panics = server.count("a panic in this connection")
                if panics:
                    problems.append(f"{name}: {panics} panics: {server.log()[-3000:]}")
            table.append(row)
            print(f"  {script}: rustls {theirs[0]}/{theirs[1]}, wssd {row[2][0]}/{row[2][1]}, "
                  f"wssd --own-records {row[3][0]}/{row[3][1]}", flush=True)
            assert alive(ref), f"the reference stopped serving after {script}: {ref.log()[-3000:]}"
            assert not problems, "; ".join(problems)

    print("tlsfuzzer: | script | rustls (reference) | wssd | wssd --own-records | (conversations passed)")
    for script, theirs, ours, own_records in table:
        print(f"| {script} | {theirs[0]}/{theirs[1]} | {ours[0]}/{ours[1]} | {own_records[0]}/{own_records[1]} |")
