// HTTP session security, end to end: a second owner replays the first
// owner's session ids with raw fetch() on every method and gets the 404 an
// unknown session gets; the first owner's sessions keep working. Also the
// session caps and the case-insensitive bearer scheme.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { newHome, startHTTP, connect, call, text } from "./harness.mjs";

const ALICE = "alice-token-0123456789abcdef";
const BOB = "bob-token-0123456789abcdefgh";
const initBody = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "raw", version: "1" } } });
const listBoxes = JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/call", params: { name: "list_boxes", arguments: {} } });

function tokenFile() {
  const f = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "tok-")), "tokens");
  fs.writeFileSync(f, `alice ${ALICE}\nbob ${BOB}\n`);
  return f;
}

/** One raw request; a streaming answer is cancelled unread. */
async function raw(url, method, token, { session, body, scheme = "Bearer" } = {}) {
  const headers = { Accept: "application/json, text/event-stream", Authorization: `${scheme} ${token}` };
  if (body) headers["Content-Type"] = "application/json";
  if (session) headers["Mcp-Session-Id"] = session;
  const r = await fetch(url, { method, headers, body, signal: AbortSignal.timeout(30_000) });
  const streaming = method === "GET" && r.ok && (r.headers.get("content-type") ?? "").startsWith("text/event-stream");
  const text = streaming ? "" : await r.text();
  if (streaming) await r.body.cancel();
  return { status: r.status, type: r.headers.get("content-type"), text, session: r.headers.get("mcp-session-id") };
}

/** Opens GET /sse raw; returns the message URL and a way to wait for a data line. */
async function openSSE(base, token) {
  const ac = new AbortController();
  const r = await fetch(base + "/sse", { headers: { Accept: "text/event-stream", Authorization: `Bearer ${token}` }, signal: ac.signal });
  assert.equal(r.status, 200);
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  const until = async (re) => {
    const deadline = Date.now() + 30_000;
    while (!re.test(buf)) {
      if (Date.now() > deadline) throw new Error(`no ${re} on the SSE stream: ${buf}`);
      const { value, done } = await reader.read();
      if (done) throw new Error(`SSE stream ended before ${re}: ${buf}`);
      buf += dec.decode(value, { stream: true });
    }
    return buf.match(re);
  };
  const m = await until(/data: (\/message\?sessionId=\S+)/);
  return { url: base + m[1], until, close: () => ac.abort() };
}

describe("HTTP sessions are bound to their owner", () => {
  let home, server, alice;
  before(async () => {
    home = newHome();
    server = await startHTTP(home, ["--token-file", tokenFile()]);
    alice = await connect("http", { url: server.url, token: ALICE });
  });
  after(async () => {
    await alice?.close();
    await server?.stop();
    fs.rmSync(home, { recursive: true, force: true });
  });

  test("streamable HTTP: bob replaying alice's Mcp-Session-Id gets 404 on POST, GET and DELETE", async () => {
    const session = alice.transport.sessionId;
    assert.ok(session, "alice has a session id");
    const mcp = server.url + "/mcp";
    for (const [method, body] of [["POST", listBoxes], ["GET"], ["DELETE"]]) {
      const replayed = await raw(mcp, method, BOB, { session, body });
      assert.equal(replayed.status, 404, `${method}: ${replayed.text}`);
      const unknown = await raw(mcp, method, BOB, { session: "0123456789abcdef0123456789abcdef", body });
      assert.deepEqual({ ...replayed, session: null }, { ...unknown, session: null }, `${method}: foreign and unknown sessions are told apart`);
    }
    // Alice's session survived every replay.
    const r = await call(alice, "list_boxes", {});
    assert.equal(r.isError, undefined);
    assert.deepEqual(r.structuredContent.boxes, []);
    const again = await raw(mcp, "POST", ALICE, { session, body: listBoxes });
    assert.equal(again.status, 200, again.text);
  });

  test("SSE: bob posting to alice's /message session gets 404", async () => {
    const sse = await openSSE(server.url, ALICE);
    try {
      const replayed = await raw(sse.url, "POST", BOB, { body: initBody });
      assert.equal(replayed.status, 404, replayed.text);
      const unknown = await raw(server.url + "/message?sessionId=0123456789abcdef0123456789abcdef", "POST", BOB, { body: initBody });
      assert.deepEqual(replayed, unknown, "foreign and unknown SSE sessions are told apart");
      // Alice's SSE session works on.
      assert.equal((await raw(sse.url, "POST", ALICE, { body: initBody })).status, 202);
      await sse.until(/"protocolVersion"/);
    } finally {
      sse.close();
    }
  });

  test("the bearer scheme is case-insensitive", async () => {
    for (const scheme of ["bearer", "BEARER"]) {
      const r = await raw(server.url + "/mcp", "POST", ALICE, { body: initBody, scheme });
      assert.equal(r.status, 200, `${scheme}: ${r.text}`);
      assert.equal((await raw(server.url + "/mcp", "DELETE", ALICE, { session: r.session, scheme })).status, 200);
    }
  });
});

describe("HTTP session caps", () => {
  test("a session over the owner's cap gets 429 saying how to free a slot; a DELETE frees it", async () => {
    const home = newHome();
    const server = await startHTTP(home, ["--token-file", tokenFile(), "--owner-max-sessions", "1"]);
    try {
      const first = await raw(server.url + "/mcp", "POST", ALICE, { body: initBody });
      assert.equal(first.status, 200, first.text);
      const over = await raw(server.url + "/mcp", "POST", ALICE, { body: initBody });
      assert.equal(over.status, 429);
      assert.match(JSON.parse(over.text).error.message, /--owner-max-sessions.*DELETE/);
      assert.equal((await raw(server.url + "/sse", "GET", ALICE)).status, 429, "SSE counts against the same cap");
      assert.equal((await raw(server.url + "/mcp", "POST", BOB, { body: initBody })).status, 200, "bob has his own cap");
      assert.equal((await raw(server.url + "/mcp", "DELETE", ALICE, { session: first.session })).status, 200);
      assert.equal((await raw(server.url + "/mcp", "POST", ALICE, { body: initBody })).status, 200);
    } finally {
      await server.stop();
      fs.rmSync(home, { recursive: true, force: true });
    }
  });
});

describe("tool calls in flight", () => {
  test("an owner over --owner-max-calls is refused at once, saying so; another owner is not held up", async () => {
    const home = newHome();
    const server = await startHTTP(home, ["--token-file", tokenFile(), "--owner-max-calls", "1"]);
    const alice = await connect("http", { url: server.url, token: ALICE });
    const bob = await connect("http", { url: server.url, token: BOB });
    try {
      const created = await call(alice, "create_box", { name: "held" });
      assert.ok(!created.isError, text(created));
      // The long call is surely in flight once its first progress
      // notification came (probing before that races it for the one slot).
      let running;
      const inFlight = new Promise((r) => (running = r));
      const long = call(alice, "exec_command", { box: "held", command: "sleep 4; echo slept" }, { onprogress: () => running() });
      const first = await Promise.race([inFlight.then(() => null), long]);
      assert.equal(first, null, `the long call ended before its first progress: ${first && text(first)}`);
      const over = await call(alice, "list_boxes", {});
      assert.ok(over.isError, "alice's second call was admitted");
      assert.match(text(over), /you have 1 running \(limit 1 per client, --owner-max-calls\)/);
      const bobs = await call(bob, "list_boxes", {});
      assert.ok(!bobs.isError, text(bobs));
      const done = await long;
      assert.ok(!done.isError && done.structuredContent.stdout === "slept\n", text(done));
      const again = await call(alice, "list_boxes", {});
      assert.ok(!again.isError, text(again));
    } finally {
      await call(alice, "destroy_box", { box: "held" }).catch(() => {});
      await alice.close();
      await bob.close();
      await server.stop();
      fs.rmSync(home, { recursive: true, force: true });
    }
  });
});
