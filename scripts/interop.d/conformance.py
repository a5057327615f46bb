"""RFC 6455 conformance: the Autobahn TestSuite cases, run by kosoku (PyPI), against wssd in echo mode.

kosoku's own exit code counts UNIMPLEMENTED as a failure, so this reads its index.json instead.
Required: 0 FAILED anywhere; every case outside 12.x and 13.x (permessage-deflate, not built yet)
OK or INFORMATIONAL, so NON-STRICT (such as invalid UTF-8 found only when the message completes,
6.4.3 and 6.4.4) fails the run too.
The 9.x cases send messages of up to 16 MiB in fragments of down to 64 bytes, so wssd runs with
its message, frame and fragment limits raised for them.
"""
import collections
import json
import os
import subprocess
import sys

from harness import TMP, Wssd, case, tally

KOSOKU = os.path.join(os.path.dirname(sys.executable), "kosoku")


@case("Autobahn cases via kosoku against wssd --plain (echo): 0 FAILED, every case outside 12.x/13.x OK")
def _():
    out = os.path.join(TMP, "autobahn")
    with Wssd("--plain", "--log-level", "error", "--max-message-size", str(64 << 20),
              "--max-frame-size", str(64 << 20), "--max-fragments", "1000000") as srv:
        subprocess.run([KOSOKU, "-m", "fuzzingclient", "-p", "2", "-o", out, f"127.0.0.1:{srv.port}"],
                       capture_output=True, text=True, timeout=900)
    with open(os.path.join(out, "index.json")) as f:
        cases = next(iter(json.load(f).values()))
    counts = collections.Counter(c["behavior"] for c in cases.values())
    print("  autobahn: " + ", ".join(f"{n} {b}" for b, n in sorted(counts.items())) + f" of {len(cases)} cases")
    failed = sorted(k for k, c in cases.items() if c["behavior"] == "FAILED")
    not_ok = sorted(f"{k} {c['behavior']}" for k, c in cases.items()
                    if c["behavior"] not in ("OK", "INFORMATIONAL") and not k.startswith(("12.", "13.")))
    assert not failed, f"FAILED: {failed}"
    assert not not_ok, f"not OK outside compression: {not_ok}"
    assert len(cases) > 500, len(cases)


if __name__ == "__main__":
    sys.exit(tally())
