// Interpreter sessions end to end: the real boxlite-mcp binary driven by
// the official MCP TypeScript SDK over stdio. On the jail engine by
// default; SESSIONS_ENGINE=qemu runs the core cases against TCG microVMs
// (fewer: every step is slower there).
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import zlib from "node:zlib";
import { newHome, connect, call, text } from "./harness.mjs";

const ENGINE = process.env.SESSIONS_ENGINE ?? "jail";
const QEMU = ENGINE === "qemu";
// Every case runs on the jail; on qemu only the core ones.
const full = QEMU ? test.skip : test;

/** Width and height of a PNG, after checking it decodes (its IDAT inflates). */
function pngSize(b64) {
  const b = Buffer.from(b64, "base64");
  assert.equal(b.subarray(1, 4).toString(), "PNG");
  const idat = [];
  for (let off = 8; off < b.length; ) {
    const len = b.readUInt32BE(off);
    const type = b.subarray(off + 4, off + 8).toString();
    if (type === "IDAT") idat.push(b.subarray(off + 8, off + 8 + len));
    off += 12 + len;
  }
  assert.ok(zlib.inflateSync(Buffer.concat(idat)).length > 0);
  return [b.readUInt32BE(16), b.readUInt32BE(20)];
}

describe(`sessions on the ${ENGINE} engine`, () => {
  let home, client, box;
  const run = (args, opts) => call(client, "run_code", { box, ...args }, opts);

  before(async () => {
    home = newHome();
    client = await connect("stdio", { home, engine: ENGINE });
    const r = await call(client, "create_box", { engine: ENGINE, memory_mib: 512 });
    assert.equal(r.isError, undefined, text(r));
    box = r.structuredContent.id;
  });
  after(async () => {
    try {
      await call(client, "destroy_box", { box });
    } finally {
      await client.close();
      fs.rmSync(home, { recursive: true, force: true });
    }
  });

  test("a DataFrame made in one call is used in the next", async () => {
    let r = await run({ code: "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2, 3]})\nprint(len(df))" });
    assert.equal(r.structuredContent.stdout, "3\n", text(r));
    assert.equal(r.structuredContent.session.restarted, true);
    assert.match(text(r), /first use/);
    r = await run({ code: "df.a.sum()" });
    assert.equal(r.structuredContent.result, "6", text(r));
    assert.equal(r.structuredContent.session.restarted, false);
    assert.equal(r.structuredContent.session.name, "default");
  });

  test("a matplotlib plot arrives as PNG image content of the figure's size", async () => {
    const r = await run({
      code: "import matplotlib.pyplot as plt\n%config InlineBackend.print_figure_kwargs = {'bbox_inches': None}\nfig = plt.figure(figsize=(4, 3), dpi=50)\nplt.plot([1, 3, 2])",
    });
    const images = r.content.filter((c) => c.type === "image");
    assert.equal(images.length, 1, text(r));
    assert.equal(images[0].mimeType, "image/png");
    assert.deepEqual(pngSize(images[0].data), [200, 150]);
    assert.equal(r.structuredContent.outputs[0].mime, "image/png");
    assert.equal(r.structuredContent.outputs[0].image, 1);
  });

  test("1/0 gives ZeroDivisionError and exit code 1, not an error result", async () => {
    const r = await run({ code: "1/0" });
    assert.equal(r.isError, undefined);
    assert.equal(r.structuredContent.exit_code, 1);
    assert.equal(r.structuredContent.error.name, "ZeroDivisionError");
    assert.doesNotMatch(r.structuredContent.error.traceback, /\x1b\[/);
  });

  test("a timeout interrupts the code and keeps the session's variables", async () => {
    await run({ code: "kept = 41" });
    const r = await run({ code: "while True: pass", timeout_seconds: 3 });
    assert.equal(r.structuredContent.timed_out, true, text(r));
    assert.equal(r.structuredContent.error.name, "KeyboardInterrupt");
    assert.match(text(r), /keeps its state/);
    const after = await run({ code: "kept + 1" });
    assert.equal(after.structuredContent.result, "42");
    assert.equal(after.structuredContent.session.restarted, false);
  });

  test("os._exit(3) is reported, and the next call works and says it restarted", async () => {
    let r = await run({ code: "import os\nos._exit(3)" });
    assert.equal(r.structuredContent.exit_code, 3, text(r));
    assert.match(text(r), /exited with code 3/);
    r = await run({ code: "1 + 1" });
    assert.equal(r.structuredContent.result, "2");
    assert.equal(r.structuredContent.session.restarted, true);
    assert.match(r.structuredContent.session.restart_reason, /exited with code 3/);
  });

  test("a JavaScript session keeps let bindings and functions", async () => {
    await run({ language: "javascript", code: "let base = 40; function add(x) { return base + x }" });
    const r = await run({ language: "javascript", code: "add(2)" });
    assert.equal(r.structuredContent.result, "42", text(r));
    assert.equal(r.structuredContent.session.language, "javascript");
  });

  full("separate sessions do not share state", async () => {
    await run({ code: "secret = 1", session: "one" });
    const r = await run({ code: "'secret' in globals()", session: "two" });
    assert.equal(r.structuredContent.result, "False");
    assert.equal((await run({ code: "secret", session: "one" })).structuredContent.result, "1");
  });

  full("fresh runs a new process; reset clears the session", async () => {
    await run({ code: "x = 5" });
    let r = await run({ code: "print('x' in globals())", fresh: true });
    assert.equal(r.structuredContent.stdout, "False\n");
    assert.equal(r.structuredContent.session, undefined);
    assert.deepEqual(r.structuredContent.outputs, []);
    assert.equal((await run({ code: "x" })).structuredContent.result, "5");
    r = await run({ code: "'x' in globals()", reset: true });
    assert.equal(r.structuredContent.result, "False");
    assert.equal(r.structuredContent.session.restart_reason, "reset");
  });

  test("a memory hog hits the box's limit and the next call works", async () => {
    await run({ code: "before = 1", session: "hog" });
    const r = await run({ code: "blocks = []\nwhile True: blocks.append(b'x' * (32 << 20))", session: "hog", timeout_seconds: 120 });
    assert.ok(r.structuredContent.exit_code !== 0, text(r));
    const next = await run({ code: "2 + 2", session: "hog" });
    assert.equal(next.structuredContent.result, "4", text(next));
  });

  full("20 parallel calls over 4 sessions of one box are all correct", async () => {
    for (let s = 0; s < 4; s++) await run({ code: "n = 0", session: `par${s}` });
    const calls = [];
    for (let i = 0; i < 20; i++) {
      const s = i % 4;
      calls.push(run({ code: `n += 1\n(${s}, n)`, session: `par${s}` }));
    }
    const results = await Promise.all(calls);
    for (const [i, r] of results.entries()) {
      assert.equal(r.isError, undefined, text(r));
      assert.match(r.structuredContent.result, new RegExp(`^\\(${i % 4}, [1-5]\\)$`));
    }
    for (let s = 0; s < 4; s++) assert.equal((await run({ code: "n", session: `par${s}` })).structuredContent.result, "5");
  });
});
