"""Method 1 against real nginx and Apache, configured from `wssd proxy-config` output.

Each proxy runs on a loopback high port with its own config directory, pid file and logs,
and a certificate made by `wssd --self-signed-dir`; the system's default sites are untouched.
Clients bind their source address to 127.0.0.9, so the client IP wssd reports can be told
apart from the proxy's 127.0.0.1.
"""
import os
import ssl
import subprocess
import sys

import websockets

from harness import WSSD, Wssd, case, free_port, self_signed_dir, tally, wait_for_port, wait_until
from servers import Apache, HAProxy, Nginx, proxy_config

CLIENT = ("127.0.0.9", 0)
ca = self_signed_dir()
trust = ssl.create_default_context(cafile=os.path.join(ca, "ca.pem"))


async def echo(url, **kwargs):
    async with websockets.connect(url, local_addr=CLIENT, **kwargs) as ws:
        await ws.send("tom")
        got = await ws.recv()
        assert got == "tom", got


def assert_client_ip(server, via_proxy=True):
    """A connection was logged with client IP 127.0.0.9 (waits for its open line)."""
    server.wait_for("open 127.0.0.9 (via 127.0.0.1:" if via_proxy else "open 127.0.0.9:")


@case("proxy-config nginx allows only TLS 1.2 and 1.3, passes Upgrade via a map, sets timeouts")
def _():
    text = proxy_config("nginx", 443, [])
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in text, text
    for needle in ["map $http_upgrade", "proxy_http_version 1.1;", "X-Real-IP", "X-Forwarded-For",
                   "X-Forwarded-Proto", "proxy_read_timeout 3600s;", "proxy_send_timeout 3600s;"]:
        assert needle in text, needle
    for bad in ["SSLv2", "SSLv3", "TLSv1 ", "TLSv1.1", "RC4"]:
        assert bad not in text.replace("SSLv2, SSLv3, TLS 1.0/1.1 and RC4", ""), bad


@case("proxy-config apache allows only TLS 1.2 and 1.3")
def _():
    text = proxy_config("apache", 443, [])
    assert "SSLProtocol -all +TLSv1.2 +TLSv1.3" in text, text
    assert "ProxyTimeout 3600" in text and "X-Real-IP" in text and "X-Forwarded-Proto" in text


async def through_nginx_and_spoof():
    with Wssd("--plain", "--path", "/wss", "--trusted-proxy", "127.0.0.1") as backend:
        port = free_port()
        with Nginx(http=proxy_config("nginx", port, [backend])) as nginx:
            wait_for_port(port, nginx.proc)
            await echo(f"wss://localhost:{port}/wss", ssl=trust)
            assert_client_ip(backend)
        # Directly, with a spoofed X-Forwarded-For: only 127.0.0.1 is trusted.
        await echo(backend.url, additional_headers={"X-Forwarded-For": "203.0.113.7"})
        assert_client_ip(backend, via_proxy=False)
        assert "203.0.113.7" not in backend.log()


@case("nginx (nginx -t clean) -> wssd: echo, client IP 127.0.0.9; a direct spoofed X-Forwarded-For changes nothing")
def _():
    return through_nginx_and_spoof()


async def through_apache():
    with Wssd("--plain", "--path", "/wss", "--trusted-proxy", "127.0.0.1") as backend:
        port = free_port()
        with Apache(proxy_config("apache", port, [backend])) as apache:
            wait_for_port(port, apache.proc)
            await echo(f"wss://localhost:{port}/wss", ssl=trust)
            assert_client_ip(backend)


@case("Apache (apachectl -t clean) -> wssd: echo, client IP 127.0.0.9")
def _():
    return through_apache()


SPOOFS = [{"Forwarded": "for=6.6.6.6"}, {"Forwarded": 'for="[2001:db8::6]"'},
          {"X-Forwarded-For": "6.6.6.6"}, {"X-Real-IP": "6.6.6.6"},
          {"Forwarded": "for=6.6.6.6", "X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.6"}]


async def spoofs_through(proxy, kind):
    """Each spoof through the unmodified `wssd proxy-config` output: wssd reports 127.0.0.9."""
    with Wssd("--plain", "--path", "/wss", "--trusted-proxy", "127.0.0.1") as backend:
        port = free_port()
        with proxy(proxy_config(kind, port, [backend])) as server:
            wait_for_port(port, server.proc)
            for n, headers in enumerate(SPOOFS, 1):
                await echo(f"wss://localhost:{port}/wss", ssl=trust, additional_headers=headers)
                wait_until(lambda: backend.log().count("open 127.0.0.9 (via 127.0.0.1:") >= n,
                           f"connection {n} logged as 127.0.0.9")
        log = backend.log()
        for spoofed in ["6.6.6.6", "2001:db8::6"]:
            assert spoofed not in log, log


@case("nginx with the generated config: Forwarded, X-Forwarded-For and X-Real-IP spoofs all give 127.0.0.9")
def _():
    return spoofs_through(lambda text: Nginx(http=text), "nginx")


@case("Apache with the generated config: Forwarded, X-Forwarded-For and X-Real-IP spoofs all give 127.0.0.9")
def _():
    return spoofs_through(Apache, "apache")


async def balanced(proxy_class):
    with Wssd("--plain", "--path", "/wss") as a, Wssd("--plain", "--path", "/wss") as b:
        port = free_port()
        kind = "nginx" if proxy_class is Nginx else "apache"
        text = proxy_config(kind, port, [a, b])
        with (Nginx(http=text) if proxy_class is Nginx else Apache(text)) as proxy:
            wait_for_port(port, proxy.proc)
            clients = []
            for _ in range(20):
                ws = await websockets.connect(f"wss://localhost:{port}/wss", ssl=trust)
                await ws.send("tom")
                assert await ws.recv() == "tom"
                clients.append(ws)
            for ws in clients:
                await ws.close()
        wait_until(lambda: a.count("] open ") + b.count("] open ") >= 20, "20 open lines")
        counts = (a.count("] open "), b.count("] open "))
        assert sum(counts) == 20 and min(counts) >= 1, counts


@case("nginx with two wssd upstreams spreads 20 connections over both")
def _():
    return balanced(Nginx)


@case("Apache balancer with two wssd upstreams spreads 20 connections over both")
def _():
    return balanced(Apache)


async def proxy_protocol():
    cert, key = os.path.join(ca, "cert.pem"), os.path.join(ca, "key.pem")
    with Wssd("--plain", "--proxy-protocol", "--trusted-proxy", "127.0.0.1") as plain, \
            Wssd("--self-signed-dir", ca, "--proxy-protocol", "--trusted-proxy", "127.0.0.1") as tls:
        tls_at_nginx, tls_at_wssd = free_port(), free_port()
        stream = f"""
    server {{  # TLS terminated at nginx; PROXY v1 then plain ws to wssd
        listen 127.0.0.1:{tls_at_nginx} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        proxy_pass 127.0.0.1:{plain.port};
        proxy_protocol on;
    }}
    server {{  # TLS passed through; PROXY v1 then the ClientHello to wssd
        listen 127.0.0.1:{tls_at_wssd};
        proxy_pass 127.0.0.1:{tls.port};
        proxy_protocol on;
    }}"""
        with Nginx(stream=stream) as nginx:
            wait_for_port(tls_at_nginx, nginx.proc)
            wait_for_port(tls_at_wssd, nginx.proc)
            await echo(f"wss://localhost:{tls_at_nginx}/", ssl=trust)
            assert_client_ip(plain)
            await echo(f"wss://localhost:{tls_at_wssd}/", ssl=trust)
            assert_client_ip(tls)


@case("PROXY protocol v1 from nginx stream, TLS at nginx and TLS at wssd: client IP 127.0.0.9")
def _():
    return proxy_protocol()


async def proxy_protocol_v2():
    with Wssd("--self-signed-dir", ca, "--proxy-protocol", "--trusted-proxy", "127.0.0.1") as tls:
        port = free_port()
        config = f"""
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend wss
    bind 127.0.0.1:{port}
    default_backend wssd
backend wssd
    server one 127.0.0.1:{tls.port} send-proxy-v2
"""
        with HAProxy(config) as haproxy:
            wait_for_port(port, haproxy.proc)
            await echo(f"wss://localhost:{port}/", ssl=trust)
            assert_client_ip(tls)


@case("PROXY protocol v2 from HAProxy (send-proxy-v2), TLS at wssd: client IP 127.0.0.9")
def _():
    return proxy_protocol_v2()


async def rooms_through(proxy, kind):
    """The README's room example, `wssd --plain --path /wss --rooms`, behind the generated config:
    /wss/room1 and /wss/room2 are rooms, each message reaches the others in its room only."""
    with Wssd("--plain", "--path", "/wss", "--rooms") as backend:
        port = free_port()
        with proxy(proxy_config(kind, port, [backend])) as server:
            wait_for_port(port, server.proc)
            base = f"wss://localhost:{port}/wss"
            async with websockets.connect(f"{base}/room1?user=tom", ssl=trust) as a, \
                    websockets.connect(f"{base}/room1", ssl=trust) as b, \
                    websockets.connect(f"{base}/room2", ssl=trust) as c, \
                    websockets.connect(f"{base}/room2", ssl=trust) as d:
                await a.send("to room1")
                assert await b.recv() == "to room1"
                await c.send("to room2")
                assert await d.recv() == "to room2"  # room1's message did not reach it
                await b.send("back")
                assert await a.recv() == "back"  # its own was not echoed back to it
        assert backend.count("answered 404") == 0, backend.log()  # the 404 warning, not a "404" in a timestamp


@case("Rooms through nginx with the generated config: /wss/room1 and /wss/room2 are separate rooms")
def _():
    return rooms_through(lambda text: Nginx(http=text), "nginx")


@case("Rooms through Apache with the generated config: /wss/room1 and /wss/room2 are separate rooms")
def _():
    return rooms_through(Apache, "apache")


def plain_get(url):
    """A plain HTTPS GET (no Upgrade), trusting wssd's CA: (status, body)."""
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(url, context=trust, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def url_in_426(proxy, kind):
    with Wssd("--plain", "--path", "/wss") as backend:
        port = free_port()
        with proxy(proxy_config(kind, port, [backend])) as server:
            wait_for_port(port, server.proc)
            status, body = plain_get(f"https://localhost:{port}/wss")
    assert status == 426, (status, body)
    assert f'new WebSocket("wss://localhost:{port}/wss")' in body, body


@case("A plain GET through nginx on a high port: the 426 names wss://localhost:PORT/wss, the URL used")
def _():
    url_in_426(lambda text: Nginx(http=text), "nginx")


@case("A plain GET through Apache on a high port: the 426 names wss://localhost:PORT/wss, the URL used")
def _():
    url_in_426(Apache, "apache")


def probe(url):
    out = subprocess.run([WSSD, "probe", url, "--ca", os.path.join(ca, "ca.pem")],
                         capture_output=True, text=True, timeout=60)
    return out.returncode, out.stdout


@case("wssd probe through nginx without the Upgrade headers names proxy_http_version and Upgrade")
def _():
    with Wssd("--plain", "--path", "/wss") as backend:
        port = free_port()
        # The classic mistake: a plain proxy_pass, as for any web page.
        broken = f"""
server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {os.path.join(ca, "cert.pem")};
    ssl_certificate_key {os.path.join(ca, "key.pem")};
    location /wss {{ proxy_pass http://127.0.0.1:{backend.port}; }}
}}"""
        with Nginx(http=broken) as nginx:
            wait_for_port(port, nginx.proc)
            code, out = probe(f"wss://localhost:{port}/wss")
        assert code != 0, out
        assert "proxy_http_version 1.1;" in out and "proxy_set_header Upgrade" in out, out


@case("wssd probe through nginx whose proxy_pass has a trailing slash says the proxy changed the path")
def _():
    with Wssd("--plain", "--path", "/wss") as backend:
        port = free_port()
        # The other classic mistake: a URI after the address replaces the location's prefix.
        rewriting = proxy_config("nginx", port, [backend]).replace(
            f"proxy_pass http://127.0.0.1:{backend.port};", f"proxy_pass http://127.0.0.1:{backend.port}/;")
        assert f"127.0.0.1:{backend.port}/;" in rewriting, rewriting
        with Nginx(http=rewriting) as nginx:
            wait_for_port(port, nginx.proc)
            code, out = probe(f"wss://localhost:{port}/wss")
        assert code != 0, out
        assert "a proxy in between changed the path: this URL asks for /wss, wssd received /." in out, out
        assert "proxy_pass http://127.0.0.1:8282;" in out, out


@case("wssd probe through nginx whose wssd upstream is down names the upstream (502)")
def _():
    port, dead = free_port(), free_port()
    with Nginx(http=proxy_config("nginx", port, [type("Dead", (), {"port": dead})])) as nginx:
        wait_for_port(port, nginx.proc)
        code, out = probe(f"wss://localhost:{port}/wss")
    assert code != 0, out
    assert "HTTP 502" in out and "upstream (wssd) is down" in out, out


if __name__ == "__main__":
    sys.exit(tally())
