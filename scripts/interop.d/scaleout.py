"""The embedding examples run for real, and scale-out: nginx in front of two wssd instances
sharing one real Redis server, with a broadcast reaching every client exactly once."""
import os
import ssl
import subprocess
import sys

import websockets

from harness import TMP, Served, Wssd, case, free_port, tally, wait_for_port, wait_until
from servers import Nginx, Redis, proxy_config

EXAMPLES = os.path.join(os.path.dirname(os.environ["WSSD"]), "examples")


def example(name, *args):
    return Served([os.path.join(EXAMPLES, name), "127.0.0.1:0", *args])


@case("examples/smol_echo.rs: wss with its own local CA answers ok")
async def _():
    ca = os.path.join(TMP, "smol-example-ca")
    with example("smol_echo", ca) as srv:
        trust = ssl.create_default_context(cafile=os.path.join(ca, "ca.pem"))
        async with websockets.connect(srv.url, ssl=trust) as ws:
            await ws.send("tom")
            assert await ws.recv() == "ok"


@case("examples/tokio_echo.rs: wss through tokio-util compat echoes")
async def _():
    ca = os.path.join(TMP, "tokio-example-ca")
    with example("tokio_echo", ca) as srv:
        trust = ssl.create_default_context(cafile=os.path.join(ca, "ca.pem"))
        async with websockets.connect(srv.url, ssl=trust) as ws:
            await ws.send("tom")
            assert await ws.recv() == "tom"
            await ws.send(b"\x01\x02")
            assert await ws.recv() == b"\x01\x02"


@case("examples/async_std_echo.rs: ws on async-std echoes")
async def _():
    with example("async_std_echo") as srv:
        async with websockets.connect(srv.url) as ws:
            await ws.send("tom")
            assert await ws.recv() == "tom"


@case("examples/chat.rs: the page, a room message to all, /msg to one user")
async def _():
    with example("chat") as srv:
        page = subprocess.run(["curl", "-sS", f"http://localhost:{srv.port}/lobby"],
                              capture_output=True, text=True, timeout=20).stdout
        assert "<title>wssd chat</title>" in page, page[:200]
        room = f"ws://localhost:{srv.port}/lobby"
        async with websockets.connect(room + "?user=ann") as ann:
            assert await ann.recv() == "* ann joined /lobby"
            async with websockets.connect(room + "?user=bob") as bob, \
                    websockets.connect(f"ws://localhost:{srv.port}/other?user=eve") as eve:
                assert await bob.recv() == "* bob joined /lobby"
                assert await ann.recv() == "* bob joined /lobby"
                await ann.send("hello")
                assert await ann.recv() == "[ann] hello"
                assert await bob.recv() == "[ann] hello"
                await ann.send("/msg bob psst")
                assert await bob.recv() == "[ann → bob] psst"
                assert await ann.recv() == "[ann → bob] psst"
                # eve, in another room, saw only her own join.
                assert await eve.recv() == "* eve joined /other"
                await eve.send("anyone?")
                assert await eve.recv() == "[eve] anyone?"


@case("nginx + two wssd --broadcast --redis + real Redis: one broadcast reaches all 11 others once")
async def _():
    with Redis() as redis, \
            Wssd("--plain", "--path", "/wss", "--broadcast", "--redis", redis.url) as a, \
            Wssd("--plain", "--path", "/wss", "--broadcast", "--redis", redis.url) as b:
        for srv in (a, b):  # both subscribed before anyone sends
            srv.wait_for("redis: subscribed")
        port = free_port()
        with Nginx(http=proxy_config("nginx", port, [a, b])) as nginx:
            wait_for_port(port, nginx.proc)
            trust = ssl.create_default_context(cafile=os.path.join(TMP, "ca", "ca.pem"))
            url = f"wss://localhost:{port}/wss"
            clients = [await websockets.connect(url, ssl=trust) for _ in range(12)]
            wait_until(lambda: a.count("] open ") + b.count("] open ") >= 12, "12 open lines")
            assert a.count("] open ") >= 1 and b.count("] open ") >= 1, (a.count("] open "), b.count("] open "))
            await clients[0].send("to everyone")
            await clients[0].send("second")
            for ws in clients[1:]:
                assert await ws.recv() == "to everyone"
                assert await ws.recv() == "second"  # not a duplicate of the first
            for ws in clients:
                await ws.close()


if __name__ == "__main__":
    sys.exit(tally())
