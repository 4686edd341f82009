// End-to-end tests: the real boxlite-mcp binary (jail engine) driven by the
// official MCP TypeScript SDK over stdio, streamable HTTP and SSE.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import os from "node:os";
import { newHome, startHTTP, connect, call, text, sleep } from "./harness.mjs";

// A 1x1 PNG.
const PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC";

for (const kind of ["stdio", "http", "sse"]) {
  describe(`over ${kind}`, () => {
    let home, server, client;
    before(async () => {
      home = newHome();
      if (kind !== "stdio") server = await startHTTP(home);
      client = await connect(kind, { home, url: server?.url });
    });
    after(async () => {
      try {
        const list = await call(client, "list_boxes", {});
        for (const b of list.structuredContent.boxes) await call(client, "destroy_box", { box: b.id });
      } finally {
        await client.close();
        await server?.stop();
        fs.rmSync(home, { recursive: true, force: true });
      }
    });

    test("lists the ten tools with every annotation set", async () => {
      const { tools } = await client.listTools();
      const names = tools.map((t) => t.name).sort();
      assert.deepEqual(names, ["create_box", "delete_snapshot", "destroy_box", "exec_command", "list_boxes", "list_snapshots",
        "read_file", "run_code", "snapshot_box", "write_file"]);
      for (const t of tools) {
        for (const hint of ["readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"]) {
          assert.equal(typeof t.annotations?.[hint], "boolean", `${t.name}.${hint}`);
        }
        assert.ok(t.outputSchema, `${t.name} has an output schema`);
      }
      const byName = Object.fromEntries(tools.map((t) => [t.name, t]));
      assert.equal(byName.list_boxes.annotations.readOnlyHint, true);
      assert.equal(byName.destroy_box.annotations.destructiveHint, true);
      assert.equal(byName.destroy_box.annotations.idempotentHint, true);
      assert.equal(byName.create_box.annotations.destructiveHint, false);
      assert.equal(byName.list_snapshots.annotations.readOnlyHint, true);
      assert.equal(byName.delete_snapshot.annotations.destructiveHint, true);
    });

    test("full tool flow", async () => {
      const created = await call(client, "create_box", { name: `flow-${kind}`, engine: "jail", env: { GREETING: "hi" } });
      assert.equal(created.isError, undefined, text(created));
      const box = created.structuredContent;
      assert.equal(box.status, "running");
      assert.equal(box.engine, "jail");
      assert.match(box.id, /^[0-9a-z]{26}$/);

      let r = await call(client, "run_code", { box: box.name, code: "import os\nprint(os.environ['GREETING'], 6*7)" });
      assert.equal(r.structuredContent.stdout, "hi 42\n");
      assert.equal(r.structuredContent.exit_code, 0);
      r = await call(client, "run_code", { box: box.id, language: "javascript", code: "console.log([1,2].map(x=>x*3).join(' '))" });
      assert.equal(r.structuredContent.stdout, "3 6\n");
      r = await call(client, "run_code", { box: box.id.slice(0, 10), language: "bash", code: "echo out; echo err >&2; exit 3" });
      assert.deepEqual([r.structuredContent.stdout, r.structuredContent.stderr, r.structuredContent.exit_code], ["out\n", "err\n", 3]);
      assert.equal(r.isError, undefined, "a non-zero exit is a normal result");
      r = await call(client, "run_code", { box: box.id, language: "sh", code: "sleep 5", timeout_seconds: 1 });
      assert.equal(r.structuredContent.timed_out, true);
      r = await call(client, "exec_command", { box: box.id, command: "cat; pwd", stdin: "from stdin\n", cwd: "/tmp" });
      assert.equal(r.structuredContent.stdout, "from stdin\n/tmp\n");

      r = await call(client, "write_file", { box: box.id, path: "/root/dir/hello.txt", content: "hello\n", mode: "0600" });
      assert.deepEqual(r.structuredContent, { path: "/root/dir/hello.txt", bytes: 6 });
      r = await call(client, "read_file", { box: box.id, path: "/root/dir/hello.txt" });
      assert.deepEqual(r.structuredContent, { path: "/root/dir/hello.txt", size: 6, encoding: "text", content: "hello\n", truncated: false });
      r = await call(client, "exec_command", { box: box.id, command: "stat -c %a /root/dir/hello.txt" });
      assert.equal(r.structuredContent.stdout, "600\n");

      await call(client, "write_file", { box: box.id, path: "/root/pic.png", content: PNG, encoding: "base64" });
      r = await call(client, "read_file", { box: box.id, path: "/root/pic.png" });
      assert.equal(r.structuredContent.encoding, "base64");
      assert.equal(r.structuredContent.content, PNG);
      const img = r.content.find((c) => c.type === "image");
      assert.ok(img, "a PNG comes back as image content too");
      assert.equal(img.mimeType, "image/png");

      r = await call(client, "read_file", { box: box.id, path: "/root/dir/hello.txt", max_bytes: 2 });
      assert.equal(r.structuredContent.content, "he");
      assert.equal(r.structuredContent.truncated, true);

      r = await call(client, "list_boxes", {});
      assert.ok(r.structuredContent.boxes.some((b) => b.id === box.id && b.status === "running"));
      r = await call(client, "list_boxes", { status: "stopped" });
      assert.deepEqual(r.structuredContent.boxes, []);

      r = await call(client, "destroy_box", { box: box.name });
      assert.deepEqual(r.structuredContent, { id: box.id, destroyed: true });
      r = await call(client, "run_code", { box: box.name, code: "print(1)" });
      assert.equal(r.isError, true);
      assert.match(text(r), /no box matches.*list_boxes/);
    });

    test("progress notifications while code runs", async () => {
      const { structuredContent: box } = await call(client, "create_box", { engine: "jail" });
      const seen = [];
      const r = await call(
        client,
        "run_code",
        { box: box.id, code: "import time\nfor i in range(4):\n    print('step', i, flush=True)\n    time.sleep(0.8)" },
        { onprogress: (p) => seen.push(p), resetTimeoutOnProgress: true },
      );
      assert.equal(r.structuredContent.exit_code, 0);
      assert.ok(seen.length >= 1, "at least one progress notification");
      assert.ok(seen.every((p, i) => i === 0 || p.progress >= seen[i - 1].progress), "progress increases");
      assert.ok(seen.some((p) => /step \d/.test(p.message ?? "")), `a message carries the latest output line: ${JSON.stringify(seen)}`);
      await call(client, "destroy_box", { box: box.id });
    });

    test("cancellation kills the guest process", async () => {
      const { structuredContent: box } = await call(client, "create_box", { engine: "jail" });
      const ac = new AbortController();
      const running = call(client, "run_code", { box: box.id, language: "bash", code: "echo $$ > /root/pid; exec sleep 300" }, { signal: ac.signal });
      running.catch(() => {});
      let pid = "";
      for (let i = 0; i < 100 && !pid; i++) {
        await sleep(100);
        const r = await call(client, "exec_command", { box: box.id, command: "cat /root/pid 2>/dev/null || true" });
        pid = r.structuredContent.stdout.trim();
      }
      assert.match(pid, /^\d+$/);
      ac.abort();
      await assert.rejects(running);
      let state = "";
      for (let i = 0; i < 50; i++) {
        const r = await call(client, "exec_command", { box: box.id, command: `kill -0 ${pid} 2>/dev/null && echo alive || echo gone` });
        state = r.structuredContent.stdout.trim();
        if (state === "gone") break;
        await sleep(100);
      }
      assert.equal(state, "gone", "the cancelled process was killed");
      await call(client, "destroy_box", { box: box.id });
    });

    test("malformed input gets clear errors and the server keeps serving", async () => {
      await assert.rejects(client.callTool({ name: "no_such_tool", arguments: {} }), /no_such_tool|not found/i);
      let r = await call(client, "run_code", { code: "print(1)" });
      assert.equal(r.isError, true);
      assert.match(text(r), /missing required argument "box"/);
      r = await call(client, "create_box", { cpus: "four" });
      assert.equal(r.isError, true);
      assert.match(text(r), /"cpus" must be an integer/);
      r = await call(client, "create_box", { bogus: 1 });
      assert.equal(r.isError, true);
      assert.match(text(r), /no argument "bogus"/);
      r = await call(client, "run_code", { box: "nope", code: "x".repeat(2 << 20) });
      assert.equal(r.isError, true);
      assert.match(text(r), /limit is 1048576 bytes/);
      r = await call(client, "create_box", { engine: "warp" });
      assert.equal(r.isError, true);
      assert.match(text(r), /engine must be one of/);
      r = await call(client, "list_boxes", {});
      assert.equal(r.isError, undefined);
    });
  });
}

describe("HTTP security", () => {
  let home, server, tokenFile;
  before(async () => {
    home = newHome();
    tokenFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "tok-")), "tokens");
    fs.writeFileSync(tokenFile, "# owner token\nalice alice-token-0123456789abcdef\nbob bob-token-0123456789abcdefgh\n");
    server = await startHTTP(home, ["--token-file", tokenFile]);
  });
  after(async () => {
    await server?.stop();
    fs.rmSync(home, { recursive: true, force: true });
  });

  const initBody = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "x", version: "1" } } });
  const post = (headers) =>
    fetch(server.url + "/mcp", { method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json, text/event-stream", ...headers }, body: initBody });

  test("a missing or wrong token gets 401", async () => {
    assert.equal((await post({})).status, 401);
    const r = await post({ Authorization: "Bearer wrong-token-0123456789" });
    assert.equal(r.status, 401);
    assert.match(r.headers.get("www-authenticate") ?? "", /Bearer/);
    assert.equal((await post({ Authorization: "Bearer alice-token-0123456789abcdef" })).status, 200);
  });

  test("a foreign Origin gets 403, a loopback one passes", async () => {
    const auth = { Authorization: "Bearer alice-token-0123456789abcdef" };
    assert.equal((await post({ ...auth, Origin: "https://evil.example" })).status, 403);
    assert.equal((await post({ ...auth, Origin: "http://localhost:3000" })).status, 200);
  });

  test("one owner cannot see, use or destroy another's box", async () => {
    const alice = await connect("http", { url: server.url, token: "alice-token-0123456789abcdef" });
    const bob = await connect("sse", { url: server.url, token: "bob-token-0123456789abcdefgh" });
    try {
      const { structuredContent: box } = await call(alice, "create_box", { name: "private", engine: "jail" });
      const bobList = await call(bob, "list_boxes", {});
      assert.deepEqual(bobList.structuredContent.boxes, []);
      for (const ref of [box.id, "private", box.id.slice(0, 8)]) {
        let r = await call(bob, "run_code", { box: ref, code: "print(1)" });
        assert.equal(r.isError, true, `bob ran code in ${ref}`);
        r = await call(bob, "destroy_box", { box: ref });
        assert.equal(r.isError, true, `bob destroyed ${ref}`);
      }
      // Bob may use the same name for his own box.
      const mine = await call(bob, "create_box", { name: "private", engine: "jail" });
      assert.equal(mine.isError, undefined, text(mine));
      assert.equal((await call(alice, "run_code", { box: "private", code: "print('still mine')" })).structuredContent.stdout, "still mine\n");
      await call(bob, "destroy_box", { box: "private" });
      await call(alice, "destroy_box", { box: "private" });
    } finally {
      await alice.close();
      await bob.close();
    }
  });
});

describe("serve refuses", () => {
  test("to listen beyond loopback without a token file", async () => {
    const { spawnSync } = await import("node:child_process");
    const { BIN } = await import("./harness.mjs");
    const r = spawnSync(BIN, ["serve", "--transport", "http", "--listen", "0.0.0.0:0", "--home", newHome()], { encoding: "utf8", timeout: 20_000 });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /without --token-file/);
  });
});

describe("graceful shutdown", () => {
  test("SIGTERM lets an in-flight call finish, then the server exits and the box keeps running", async () => {
    const home = newHome();
    const server = await startHTTP(home);
    const client = await connect("http", { url: server.url });
    const { structuredContent: box } = await call(client, "create_box", { engine: "jail" });
    const inflight = call(client, "run_code", { box: box.id, language: "bash", code: "sleep 2; echo finished" });
    await sleep(500);
    const exited = new Promise((r) => server.proc.on("exit", (code) => r(code)));
    server.proc.kill("SIGTERM");
    const r = await inflight;
    assert.equal(r.structuredContent?.stdout, "finished\n", text(r));
    assert.equal(await exited, 0);
    // Boxes are host-wide: a new server finds the box still running.
    const again = await startHTTP(home);
    const c2 = await connect("http", { url: again.url });
    const b = (await call(c2, "list_boxes", {})).structuredContent.boxes.find((x) => x.id === box.id);
    assert.equal(b?.status, "running");
    await call(c2, "destroy_box", { box: box.id });
    await c2.close();
    await again.stop();
    fs.rmSync(home, { recursive: true, force: true });
  });
});
