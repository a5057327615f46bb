"""Runs every interop suite (each module runs its cases as it is imported), then one tally."""
import sys

from harness import tally

import websockets_client  # noqa: F401,E402 - the Python websockets client against wssd
import proxies  # noqa: F401,E402 - Method 1 through real nginx, Apache and HAProxy
import browser  # noqa: F401,E402 - the recipe's test in real Chromium
import acme  # noqa: F401,E402 - certificates from Pebble by TLS-ALPN-01, in Chromium
import bridge  # noqa: F401,E402 - the app bridge with real PHP apps (php -S)
import conformance  # noqa: F401,E402 - the Autobahn cases via kosoku
import tlsfuzz  # noqa: F401,E402 - tlsfuzzer against wssd and against plain rustls
import scaleout  # noqa: F401,E402 - the examples, and nginx + two wssd + Redis

sys.exit(tally())
