"""Headless Chromium (Debian's, driven by playwright-core through browser/browser.mjs), for the
suites that need a real browser: each run gets a HOME whose NSS database trusts the CA given."""
import json
import os
import subprocess

from harness import TMP, self_signed_dir

HERE = os.path.dirname(os.path.abspath(__file__))


def home(trusting, ca_file=None, tag=None):
    """A HOME whose NSS database trusts wssd's CA (or `ca_file`, under the name `tag`), or
    trusts nothing."""
    ca_file = ca_file or os.path.join(self_signed_dir(), "ca.pem")
    path = os.path.join(TMP, f"home-{tag}" if tag else "home-trusting" if trusting else "home-empty")
    nssdb = os.path.join(path, ".pki", "nssdb")
    if not os.path.isdir(nssdb):
        os.makedirs(nssdb)
        subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-N", "--empty-password"], check=True)
        if trusting:
            subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-A", "-t", "C,,", "-n", "wssd test CA",
                            "-i", ca_file], check=True)
    return path


def browser(mode, url, trusting=True, protocols=None, ca_file=None, tag=None, resolve=None):
    """Runs browser.mjs; `ca_file` and `tag` give a HOME trusting that CA alone, `resolve` a
    host name that Chromium maps to 127.0.0.1."""
    return started(mode, url, trusting, protocols, ca_file, tag, resolve).result()


class started:
    """browser.mjs running in the background (for modes that wait for pushes); `result()`
    waits for its JSON line."""

    def __init__(self, mode, url, trusting=True, protocols=None, ca_file=None, tag=None, resolve=None):
        env = dict(os.environ, HOME=home(trusting, ca_file, tag))
        if resolve:
            env["WSSD_CHROMIUM_ARGS"] = json.dumps([f"--host-resolver-rules=MAP {resolve} 127.0.0.1"])
        extra = [",".join(protocols) if isinstance(protocols, list) else str(protocols)] if protocols else []
        self.proc = subprocess.Popen(["node", os.path.join(HERE, "browser", "browser.mjs"), mode, url, *extra],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result(self):
        try:
            out, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise RuntimeError(f"browser.mjs did not finish within 60 s: {err[-2000:]}")
        if self.proc.returncode != 0:
            raise RuntimeError(f"browser.mjs failed: {err[-2000:]}")
        return json.loads(out.strip().splitlines()[-1])
