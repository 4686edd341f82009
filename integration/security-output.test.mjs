// Box output that is costly to encode must never break the client's
// connection (issue 11, point 5). A control byte becomes a six-character
// JSON escape (\u0000), and the output used to be sent twice (text and
// structuredContent): 2 MB of NULs made a 12.6 MB stdio frame, over the
// official TypeScript client's 10 MiB limit; the client closed and the
// stdio server died with it. Jail engine, stdio transport.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { newHome, connect, call, text } from "./harness.mjs";

// What one response may weigh whatever the box prints (tools.MaxResultBytes).
const MESSAGE_LIMIT = 4 * 1024 * 1024;

const cases = [
  { name: "2 MB of NUL on stdout", stream: "stdout", ch: "\0", total: 2_000_000,
    code: "import sys; sys.stdout.write('\\0'*2_000_000)" },
  { name: "2 MB of \\x01 on stdout", stream: "stdout", ch: "\x01", total: 2_000_000,
    code: "import sys; sys.stdout.write('\\x01'*2_000_000)" },
  { name: "4 MB of NUL on stderr", stream: "stderr", ch: "\0", total: 4_000_000,
    code: "import sys; sys.stderr.write('\\0'*4_000_000)" },
];

// Each case runs on its own stdio server (the box outlives them), so one
// case that kills its server does not fail the next.
async function withClient(home, fn) {
  const client = await connect("stdio", { home });
  try {
    return await fn(client);
  } finally {
    await client.close();
  }
}

describe("costly box output over stdio", () => {
  let home, box;
  before(async () => {
    home = newHome();
    box = await withClient(home, async (client) => {
      const r = await call(client, "create_box", { engine: "jail" });
      assert.equal(r.isError, undefined, text(r));
      return r.structuredContent;
    });
  });
  after(async () => {
    try {
      await withClient(home, (client) => call(client, "destroy_box", { box: box.id }));
    } finally {
      fs.rmSync(home, { recursive: true, force: true });
    }
  });

  for (const c of cases) {
    test(`${c.name}: a truncated result, and the server answers the next call`, () => withClient(home, async (client) => {
      const r = await call(client, "run_code", { box: box.id, code: c.code }, { timeout: 120_000 });
      assert.equal(r.isError, undefined, text(r));
      const out = r.structuredContent;
      const got = out[c.stream];
      assert.equal(out.truncated, true);
      assert.equal(out[`${c.stream}_bytes`], c.total, "the count of bytes the program wrote");
      assert.ok(got.length > 0 && got.length < c.total, `returned ${got.length} of ${c.total} characters`);
      assert.equal(got, c.ch.repeat(got.length), "the returned output is a prefix of what was printed");
      assert.equal(out[`${c.stream}_dropped`], c.total - got.length, "the dropped count says what was left out");
      const size = JSON.stringify(r).length;
      assert.ok(size < MESSAGE_LIMIT, `the result is ${size} characters of JSON`);
      assert.ok(text(r).length < 128 * 1024, "the text content does not repeat the large output");
      assert.match(text(r), /over the server's limit/);

      const next = await call(client, "run_code", { box: box.id, code: "print('alive')" }, { timeout: 60_000 });
      assert.equal(next.structuredContent?.stdout, "alive\n", `the server still answers: ${text(next)}`);
    }));
  }
});
