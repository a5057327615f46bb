// Runs the recipe's browser test in Debian's headless Chromium and prints one JSON line.
//
//   node browser.mjs snippet URL   the recipe's snippet, from a blank page: open, send "tom"
//                                  and an ArrayBuffer [1, 2, 3], record both replies
//   node browser.mjs snippet URL P1,P2
//                                  the same, opening with new WebSocket(URL, ["P1", "P2"]);
//                                  the result adds the subprotocol chosen, ws.protocol
//   node browser.mjs deflate URL   send a 2 KiB JSON text and record the echo and ws.extensions,
//                                  the permessage-deflate terms the browser agreed on
//   node browser.mjs page URL      load the --test-page at URL and wait for its first reply
//   node browser.mjs listen URL N  open, send nothing, and record the first N text messages
//
// HOME must hold the NSS database (~/.pki/nssdb) that says which CAs to trust; no
// certificate error is ever ignored. A fresh user data directory is made per run.
// WSSD_CHROMIUM_ARGS, a JSON list, adds Chromium flags, such as
// ["--host-resolver-rules=MAP acme.wssd.test 127.0.0.1"] to reach a test domain.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [mode, url, protocols] = process.argv.slice(2);
const userDataDir = mkdtempSync(join(tmpdir(), "wssd-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  env: { ...process.env },
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ...JSON.parse(process.env.WSSD_CHROMIUM_ARGS || "[]"),
  ],
});
let result;
try {
  const page = await context.newPage();
  if (mode === "page") {
    const response = await page.goto(url).catch((e) => ({ error: String(e) }));
    if (response.error) {
      result = { ok: false, error: response.error };
    } else {
      await page.waitForFunction(() => document.title.includes(":"), null, { timeout: 15000 });
      result = { ok: true, title: await page.title() };
    }
  } else if (mode === "listen") {
    result = await page.evaluate(([url, count]) => new Promise((resolve) => {
      const ws = new WebSocket(url);
      const got = [];
      ws.onmessage = (e) => {
        got.push(e.data);
        if (got.length === count) {
          ws.close(1000, "done");
          resolve({ ok: true, got });
        }
      };
      ws.onclose = (e) => resolve({ ok: false, closeCode: e.code, got });
      setTimeout(() => resolve({ ok: false, error: "not all messages within 30 s", got }), 30000);
    }), [url, Number(protocols)]);
  } else if (mode === "deflate") {
    result = await page.evaluate((url) => new Promise((resolve) => {
      const ws = new WebSocket(url);
      const json = JSON.stringify(Array.from({ length: 64 }, (_, i) => ({ user: "tom", seq: i, text: "hello" })));
      ws.onopen = () => ws.send(json);
      ws.onmessage = (e) => {
        ws.close(1000, "done");
        resolve({ ok: true, extensions: ws.extensions, echoed: e.data === json, size: json.length });
      };
      ws.onclose = (e) => resolve({ ok: false, closeCode: e.code });
      setTimeout(() => resolve({ ok: false, error: "no reply within 15 s" }), 15000);
    }), url);
  } else {
    result = await page.evaluate(([url, protocols]) => new Promise((resolve) => {
      // The recipe's snippet, plus a binary message.
      const ws = protocols ? new WebSocket(url, protocols.split(",")) : new WebSocket(url);
      ws.binaryType = "arraybuffer";
      const got = [];
      ws.onopen = () => { ws.send("tom"); ws.send(new Uint8Array([1, 2, 3]).buffer); };
      ws.onmessage = (e) => {
        got.push(typeof e.data === "string" ? { text: e.data } : { binary: [...new Uint8Array(e.data)] });
        if (got.length === 2) {
          ws.close(1000, "done");
          resolve(protocols ? { ok: true, got, protocol: ws.protocol } : { ok: true, got });
        }
      };
      ws.onclose = (e) => resolve({ ok: false, closeCode: e.code, got });
      setTimeout(() => resolve({ ok: false, error: "no replies within 15 s", got }), 15000);
    }), [url, protocols]);
  }
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
