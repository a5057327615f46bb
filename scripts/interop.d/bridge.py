"""The app bridge with a real PHP app: Debian's php-cli built-in server runs
examples/app-bridge/*.php, wssd --app posts the events to it, and real clients (headless
Chromium, the Python websockets client) connect through wssd.

Usage: WSSD=target/debug/wssd python bridge.py
"""
import json
import os
import signal
import subprocess
import sys
import urllib.request

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from harness import TMP, Wssd, case, free_port, tally, wait_for_port
from chromium import browser, started
from servers import Redis

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, "..", "..", "examples", "app-bridge")


class Php:
    """`php -S 127.0.0.1:PORT SCRIPT`, with 4 workers."""

    def __init__(self, script, port=None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = dict(os.environ, PHP_CLI_SERVER_WORKERS="4")
        self.log = open(os.path.join(TMP, f"php-{self.port}.log"), "a")
        # Its own process group: the workers it forks stop with it.
        self.proc = subprocess.Popen(["php", "-S", f"127.0.0.1:{self.port}", os.path.join(EXAMPLES, script)],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.port, self.proc)

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait()
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


@case("Chromium through wssd --app to the PHP app (app.php, the recipe's onMessage): both messages answered ok")
def _():
    with Php("app.php") as php, Wssd("--self-signed-dir", os.path.join(TMP, "ca"), "--app", php.url) as srv:
        result = browser("snippet", srv.url)
        assert result == {"ok": True, "got": [{"text": "ok"}, {"text": "ok"}]}, result


@case("chat.php: a good token is let in, bound to its user, welcomed and given the subprotocol it offered; a bad token makes Chromium's WebSocket fail and wssd logs the app's 401")
def _():
    with Php("chat.php") as php, Wssd("--plain", "--app", php.url) as srv:
        with connect(f"{srv.url}/?token=alice-secret&room=lobby", open_timeout=10,
                     subprotocols=["mqtt", "chat.v1"]) as ws:
            assert ws.subprotocol == "chat.v1", ws.subprotocol  # the app chose it, on open
            assert ws.recv(timeout=10) == "welcome alice, you are in lobby"
            ws.send("hello")
            assert ws.recv(timeout=10) == "alice: hello"
        result = browser("snippet", f"{srv.url}/?token=wrong")
        assert result["ok"] is False and result["got"] == [], result
        srv.wait_for("refused with 401: the app refused it: bad token")


def live_connection(srv, php, port, live):
    """The live connection `live` across the app's stop and return."""
    live.send("tom")
    assert live.recv(timeout=10) == "ok"
    php.stop()
    try:
        connect(srv.url, open_timeout=10)
        raise AssertionError("a handshake got through with the app down")
    except InvalidStatus as e:
        assert e.response.status_code == 503, e.response.status_code
    srv.wait_for("refused with 503: the app at")
    # The live connection is still open: nothing needed the app.
    live.ping().wait(10)
    live.send("lost?")
    try:
        live.recv(timeout=15)
        raise AssertionError("an answer came with the app down")
    except ConnectionClosed as e:
        assert e.rcvd is not None and e.rcvd.code == 1011, e.rcvd
    srv.wait_for("did not take message 2 of connection")
    php = Php("app.php", port)
    try:
        with connect(srv.url, open_timeout=10) as ws:
            ws.send("tom")
            assert ws.recv(timeout=10) == "ok"
    finally:
        php.stop()


@case("The app stopped mid-run: new handshakes get 503, a live connection is closed with 1011 only when a message cannot be delivered, and all recovers when the app returns")
def _():
    port = free_port()
    php = Php("app.php", port)
    with Wssd("--plain", "--app", php.url) as srv:
        with connect(srv.url, open_timeout=10, close_timeout=5) as live:
            live_connection(srv, php, port, live)


@case("A slow app: a client sending 300 messages faster than the app answers is slowed, gets all 300 answers in order, and another client is answered meanwhile")
def _():
    with Php("app.php") as php, Wssd("--plain", "--app", php.url, "--app-concurrency", "2") as srv:
        with connect(srv.url, open_timeout=10) as fast, connect(srv.url, open_timeout=10) as other:
            for i in range(300):
                fast.send(f"m{i}")
            other.send("tom")
            assert other.recv(timeout=30) == "ok"
            answers = [fast.recv(timeout=30) for _ in range(300)]
            assert answers == ["ok"] * 300, answers[:5]
        srv.wait_for("] close ", count=2)
        assert "did not take" not in srv.log(), srv.log()


def api_get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.loads(r.read())


def api_post(port, path, body):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


def push(api_port, *args):
    """Runs examples/app-bridge/push.php against the API on `api_port`."""
    env = dict(os.environ, WSSD_API=f"http://127.0.0.1:{api_port}")
    out = subprocess.run(["php", os.path.join(EXAMPLES, "push.php"), *args], env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


@case("push.php through the push API reaches Chromium by user id and by group; a member of another group receives nothing")
def _():
    api = free_port()
    with Php("chat.php") as php, Wssd("--plain", "--app", php.url, "--api", f"127.0.0.1:{api}") as srv:
        alice = started("listen", f"{srv.url}/?token=alice-secret&room=lobby", protocols=3)
        with connect(f"{srv.url}/?token=bob-secret&room=kitchen", open_timeout=10) as bob:
            assert bob.recv(timeout=10) == "welcome bob, you are in kitchen"
            srv.wait_for("] open ", count=2)  # alice's browser is in too
            assert "sent to 1 connection" in push(api, "user", "alice", "for alice only")
            assert "sent to 1 connection" in push(api, "group", "lobby", "for the lobby")
            result = alice.result()
            assert result == {"ok": True, "got": ["welcome alice, you are in lobby", "for alice only", "for the lobby"]}, result
            # Bob, in another group, got neither: the next thing he gets is this marker.
            push(api, "user", "bob", "marker")
            assert bob.recv(timeout=10) == "marker"


@case("Two wssd on one real Redis: a push to instance A's API reaches a user connected to instance B exactly once, by user and by connection id, and a close by id through A closes it on B")
def _():
    api_a, api_b = free_port(), free_port()
    with Redis() as redis, Php("chat.php") as php, \
            Wssd("--plain", "--app", php.url, "--api", f"127.0.0.1:{api_a}", "--redis", redis.url) as a, \
            Wssd("--plain", "--app", php.url, "--api", f"127.0.0.1:{api_b}", "--redis", redis.url) as b:
        a.wait_for("redis: subscribed")
        b.wait_for("redis: subscribed")
        with connect(f"{b.url}/?token=bob-secret&room=kitchen", open_timeout=10) as bob:
            assert bob.recv(timeout=10) == "welcome bob, you are in kitchen"
            assert "sent to 0 connection" in push(api_a, "user", "bob", "from A")
            assert bob.recv(timeout=10) == "from A"
            # Exactly once: the next message is B's own marker, not a second copy.
            assert "sent to 1 connection" in push(api_b, "user", "bob", "marker")
            assert bob.recv(timeout=10) == "marker"
            # By connection id, through A: ids are unique across instances, B delivers it.
            [bob_id] = api_get(api_b, "/connections?user=bob")["connections"]
            with connect(f"{a.url}/?token=alice-secret", open_timeout=10) as alice:
                alice.recv(timeout=10)
                [alice_id] = api_get(api_a, "/connections?user=alice")["connections"]
                assert alice_id != bob_id and alice_id >> 33 != bob_id >> 33, (alice_id, bob_id)
            assert "sent to 0 connection" in push(api_a, "id", str(bob_id), "by id, via A")
            assert bob.recv(timeout=10) == "by id, via A"
            # And a close by id, through A, closes it on B with the code given.
            api_post(api_a, "/close", {"id": bob_id, "code": 4001, "reason": "moved"})
            try:
                bob.recv(timeout=10)
                raise AssertionError("still open")
            except ConnectionClosed as e:
                assert e.rcvd is not None and e.rcvd.code == 4001 and e.rcvd.reason == "moved", e.rcvd


if __name__ == "__main__":
    sys.exit(tally())
