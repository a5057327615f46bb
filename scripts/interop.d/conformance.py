"""RFC 6455 and RFC 7692 conformance: all 517 Autobahn TestSuite cases, run by kosoku (PyPI),
against wssd in echo mode with permessage-deflate on, over ws and over wss.

kosoku's own exit code counts UNIMPLEMENTED as a failure, so this reads its index.json instead.
Required: every case OK or INFORMATIONAL (so 0 FAILED, 0 UNIMPLEMENTED, 0 NON-STRICT), the
compression cases 12.x and 13.x included.
kosoku speaks only ws://: for wss, nginx's stream module takes its plain connection and opens
TLS to wssd (proxy_ssl, verifying wssd's certificate against its local CA), so the cases run
through wssd's TLS.
The wssd flags: the 9.x cases send messages of up to 16 MiB in fragments of down to 64 bytes,
so the message, frame and fragment limits are raised; the 12.x and 13.x cases count any frame
they did not ask for, such as the server's heartbeat ping, as a failure, so pings are off; and
they expect every echoed message compressed, so --deflate-min-size is 0.
"""
import collections
import json
import os
import subprocess
import sys

from harness import TMP, Wssd, case, free_port, self_signed_dir, tally, wait_for_port
from servers import Nginx

KOSOKU = os.path.join(os.path.dirname(sys.executable), "kosoku")
FLAGS = ["--log-level", "error", "--max-message-size", str(64 << 20), "--max-frame-size", str(64 << 20),
         "--max-fragments", "1000000", "--permessage-deflate", "--deflate-min-size", "0",
         "--ping-interval", "0"]


def autobahn(port, name):
    out = os.path.join(TMP, f"autobahn-{name}")
    subprocess.run([KOSOKU, "-m", "fuzzingclient", "-p", "2", "-o", out, f"127.0.0.1:{port}"],
                   capture_output=True, text=True, timeout=1800)
    with open(os.path.join(out, "index.json")) as f:
        cases = next(iter(json.load(f).values()))
    counts = collections.Counter(c["behavior"] for c in cases.values())
    print(f"  autobahn over {name}: " + ", ".join(f"{n} {b}" for b, n in sorted(counts.items()))
          + f" of {len(cases)} cases")
    not_ok = sorted(f"{k} {c['behavior']}" for k, c in cases.items()
                    if c["behavior"] not in ("OK", "INFORMATIONAL"))
    assert not not_ok, f"not OK: {not_ok}"
    assert len(cases) == 517, len(cases)


@case("Autobahn, all 517 cases via kosoku against wssd --plain --permessage-deflate: every case OK")
def _():
    with Wssd("--plain", *FLAGS) as srv:
        autobahn(srv.port, "ws")


@case("Autobahn, all 517 cases via kosoku against wssd over TLS (--permessage-deflate): every case OK")
def _():
    ca = self_signed_dir()
    with Wssd("--self-signed-dir", ca, *FLAGS) as srv:
        port = free_port()
        stream = f"""
    server {{  # kosoku's plain ws in, TLS to wssd out
        listen 127.0.0.1:{port};
        proxy_pass 127.0.0.1:{srv.port};
        proxy_ssl on;
        proxy_ssl_protocols TLSv1.2 TLSv1.3;
        proxy_ssl_verify on;
        proxy_ssl_trusted_certificate {os.path.join(ca, "ca.pem")};
        proxy_ssl_name localhost;
        proxy_ssl_server_name on;
    }}"""
        with Nginx(stream=stream) as nginx:
            wait_for_port(port, nginx.proc)
            autobahn(port, "wss")


if __name__ == "__main__":
    sys.exit(tally())
