"""The recipe's own test: a real browser (Debian's headless Chromium, driven by playwright-core)
runs `new WebSocket("wss://...")` against wssd. The browser trusts wssd's local CA through an NSS
database in its own HOME, as a person would import it; no certificate error is ignored."""
import json
import os
import subprocess
import sys

from harness import TMP, Wssd, case, free_port, self_signed_dir, tally, wait_for_port
from chromium import browser
from servers import Nginx, proxy_config

HERE = os.path.dirname(os.path.abspath(__file__))
ca = self_signed_dir()


def chain_dir():
    """root.pem, int.pem (an intermediate CA) and leaf.pem + leaf.key (localhost, signed by the
    intermediate), made by openssl as a CA would issue them: the leaf file without its chain."""
    d = os.path.join(TMP, "chain")
    if os.path.exists(os.path.join(d, "leaf.key")):
        return d
    os.makedirs(d)
    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "root.key", "-out", "root.pem", "-days", "30", "-subj", "/CN=wssd interop root")
    run("req", *ec, "-keyout", "int.key", "-out", "int.csr", "-subj", "/CN=wssd interop intermediate")
    with open(os.path.join(d, "int.ext"), "w") as f:
        f.write("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
    run("x509", "-req", "-in", "int.csr", "-CA", "root.pem", "-CAkey", "root.key", "-CAcreateserial",
        "-out", "int.pem", "-days", "30", "-extfile", "int.ext")
    run("req", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost")
    with open(os.path.join(d, "leaf.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "leaf.csr", "-CA", "int.pem", "-CAkey", "int.key", "-CAcreateserial",
        "-out", "leaf.pem", "-days", "30", "-extfile", "leaf.ext")
    return d


@case("Chromium trusting only the root gets ok with --cert leaf.pem --chain int.pem (the intermediates in a file of their own)")
def _():
    d = chain_dir()
    with Wssd("--cert", os.path.join(d, "leaf.pem"), "--chain", os.path.join(d, "int.pem"),
              "--key", os.path.join(d, "leaf.key"), "--reply", "ok") as srv:
        result = browser("snippet", srv.url, ca_file=os.path.join(d, "root.pem"), tag="chain-root")
        assert result == {"ok": True, "got": [{"text": "ok"}, {"text": "ok"}]}, result


@case("Chromium refuses the leaf served without its intermediate; wssd warned at start and names that as the likely cause")
def _():
    d = chain_dir()
    with Wssd("--cert", os.path.join(d, "leaf.pem"), "--key", os.path.join(d, "leaf.key"), "--reply", "ok") as srv:
        srv.wait_for("the chain lacks the intermediate certificate that signed the leaf")
        result = browser("snippet", srv.url, ca_file=os.path.join(d, "root.pem"), tag="chain-root")
        assert result["ok"] is False and result["got"] == [], result
        srv.wait_for("the likely cause:")
        failed = [line for line in srv.lines if "TLS handshake failed" in line]
        assert all("lacks the intermediate" in line for line in failed), failed


@case("Chromium, Method 2 (wss direct, --reply ok), CA trusted via NSS: the snippet gets ok")
def _():
    with Wssd("--self-signed-dir", ca, "--reply", "ok") as srv:
        result = browser("snippet", srv.url)
        assert result == {"ok": True, "got": [{"text": "ok"}, {"text": "ok"}]}, result


@case("Chromium, echo: a text message comes back as text, an ArrayBuffer as binary")
def _():
    with Wssd("--self-signed-dir", ca) as srv:
        result = browser("snippet", srv.url)
        assert result == {"ok": True, "got": [{"text": "tom"}, {"binary": [1, 2, 3]}]}, result


@case("Chromium without the CA imported is refused (the test can fail)")
def _():
    with Wssd("--self-signed-dir", ca, "--reply", "ok") as srv:
        result = browser("snippet", srv.url, trusting=False)
        assert result["ok"] is False and result["got"] == [], result
        srv.wait_for("TLS handshake failed")


@case("Chromium, Method 1 through real nginx at /wss: the snippet gets its echo")
def _():
    with Wssd("--plain", "--path", "/wss") as backend:
        port = free_port()
        with Nginx(http=proxy_config("nginx", port, [backend])) as nginx:
            wait_for_port(port, nginx.proc)
            result = browser("snippet", f"wss://localhost:{port}/wss")
            assert result == {"ok": True, "got": [{"text": "tom"}, {"binary": [1, 2, 3]}]}, result


@case("Chromium opening with subprotocols [\"mqtt\", \"chat\"] against --subprotocol chat connects; ws.protocol is chat")
def _():
    with Wssd("--self-signed-dir", ca, "--subprotocol", "chat") as srv:
        result = browser("snippet", srv.url, protocols=["mqtt", "chat"])
        assert result == {"ok": True, "got": [{"text": "tom"}, {"binary": [1, 2, 3]}], "protocol": "chat"}, result


@case("Chromium negotiates permessage-deflate with --permessage-deflate and gets its 2 KiB JSON back")
def _():
    with Wssd("--self-signed-dir", ca, "--permessage-deflate") as srv:
        result = browser("deflate", srv.url)
        assert result["ok"] and result["echoed"] and result["size"] > 2000, result
        assert result["extensions"] == "permessage-deflate; server_no_context_takeover; client_no_context_takeover", result


@case("Chromium loads --test-page over https and the page's own snippet gets its echo")
def _():
    with Wssd("--self-signed-dir", ca, "--test-page") as srv:
        result = browser("page", srv.url.replace("wss://", "https://") + "/")
        assert result == {"ok": True, "title": "wssd test page: tom"}, result


if __name__ == "__main__":
    sys.exit(tally())
