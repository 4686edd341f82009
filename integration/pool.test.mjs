// The warm pool end to end: the real boxlite-mcp binary (serve --pool)
// driven by the official MCP TypeScript SDK over streamable HTTP, with
// doctor reading the pool's fill. Which boxes were pooled is read from the
// servers' logs ("box pooled" lines); that a create was served from the
// pool shows in the box: its default Python session is already running
// (the first run_code reports restarted: false). Jail in every case; one
// lean case on qemu (TCG boots take seconds).
import { describe, test, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { newHome, startHTTP, connect, call, text, sleep, BIN } from "./harness.mjs";

const CACHE = process.env.BOXLITE_TEST_HOME ?? "/var/tmp/boxlite-test-home";
const homes = [];
after(() => {
  for (const h of homes) {
    killBoxes(h);
    fs.rmSync(h, { recursive: true, force: true });
  }
});

/**
 * killBoxes kills what still runs of h's boxes (a pool a failed case left
 * filling outlives its servers by design): every process in each box's
 * cgroups, the VMM's and network helper's included.
 */
function killBoxes(h) {
  let ids = [];
  try { ids = fs.readdirSync(path.join(h, "boxes")); } catch { return; }
  const roots = ["/sys/fs/cgroup/boxlite"];
  for (const c of ["memory", "pids", "cpu", "freezer"]) roots.push(`/sys/fs/cgroup/${c}/boxlite`);
  for (const root of roots) {
    let names = [];
    try { names = fs.readdirSync(root); } catch { continue; }
    for (const n of names) {
      if (!ids.some((id) => n === id || n.startsWith(id + "."))) continue;
      const procs = [];
      const walk = (d) => {
        try { procs.push(...fs.readFileSync(path.join(d, "cgroup.procs"), "utf8").split("\n").filter(Boolean)); } catch {}
        try { for (const e of fs.readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(path.join(d, e.name)); } catch {}
      };
      walk(path.join(root, n));
      for (const pid of procs) try { process.kill(Number(pid), "SIGKILL"); } catch {}
    }
  }
}

function home() {
  const h = newHome();
  homes.push(h);
  return h;
}

/** doctor's line for engine's pool, e.g. "jail  2 ready of 2, 0 filling; last refill error: none". */
function poolLine(h, engine) {
  const out = execFileSync(BIN, ["doctor", "--home", h], { encoding: "utf8", timeout: 60_000 });
  return out.split("\n").find((l) => l.startsWith(`  ${engine.padEnd(5)} `) && l.includes(" ready of ")) ?? "";
}

/** Waits until doctor shows engine's pool holding n ready boxes and none filling. */
async function waitReady(h, engine, n, timeoutMs = 120_000) {
  const deadline = Date.now() + timeoutMs;
  let line = "";
  while (Date.now() < deadline) {
    line = poolLine(h, engine);
    if (line.includes(` ${n} ready of `) && line.includes(", 0 filling") && !line.includes("being removed")) return line;
    await sleep(300);
  }
  assert.fail(`pool ${engine} never held ${n} ready boxes: ${JSON.stringify(line)}`);
}

/** Ids of the boxes a server has pooled, from its log, in order (the harness's log may repeat lines). */
const pooledIds = (srv) => [...new Set([...srv.log().matchAll(/msg="box pooled".*?box_id=([0-9a-z]{26})/g)].map((m) => m[1]))];

/** Waits until the servers' logs name n pooled boxes (a box is recorded pooled a moment before it is logged). */
async function waitLogged(srvs, n) {
  const deadline = Date.now() + 30_000;
  const ids = () => [...new Set(srvs.flatMap(pooledIds))];
  while (ids().length < n && Date.now() < deadline) await sleep(100);
  return ids();
}

/** Whether the servers' logs name box id as pooled (waiting a little for the line). */
async function wasPooled(srvs, id) {
  const deadline = Date.now() + 10_000;
  while (!srvs.some((s) => pooledIds(s).includes(id)) && Date.now() < deadline) await sleep(100);
  return srvs.some((s) => pooledIds(s).includes(id));
}

/** Creates a box and runs print(1) in its default session; returns the id and whether the session was already running. */
async function createAndRun(client, args = {}) {
  const c = await call(client, "create_box", args);
  assert.equal(c.isError, undefined, text(c));
  const id = c.structuredContent.id;
  const r = await call(client, "run_code", { box: id, code: "print(1)" });
  assert.equal(r.isError, undefined, text(r));
  assert.equal(r.structuredContent.stdout, "1\n", text(r));
  return { id, warm: r.structuredContent.session.restarted === false };
}

describe("warm pool on the jail engine", () => {
  test("two servers on one home hand out each pooled box once, refill, and the pool outlives a SIGKILL", async () => {
    const h = home();
    const a = await startHTTP(h, ["--pool", "jail=2"]);
    const b = await startHTTP(h, ["--pool", "jail=2"]);
    const ca = await connect("http", { url: a.url });
    const cb = await connect("http", { url: b.url });
    try {
      await waitReady(h, "jail", 2);
      const first = new Set(await waitLogged([a, b], 2));
      assert.equal(first.size, 2, "two servers filled one pool of 2, not more");
      // Six concurrent creates, three through each server.
      const made = await Promise.all([ca, ca, ca, cb, cb, cb].map((c) => createAndRun(c)));
      const ids = made.map((m) => m.id);
      assert.equal(new Set(ids).size, 6, `a box was handed out twice: ${ids}`);
      for (const id of first) assert.ok(ids.includes(id), `pooled box ${id} was not handed out`);
      // Each box has run code since its claim: a pooled one's log line is long written.
      for (const m of made) assert.equal(m.warm, pooledIds(a).concat(pooledIds(b)).includes(m.id), `box ${m.id}: warm session iff it was pooled`);
      // A claimed box is a normal box: listed, named, with its env.
      await waitReady(h, "jail", 2);
      const named = await call(ca, "create_box", { name: "claimed", env: { GREETING: "hello pool" }, ttl_seconds: 600 });
      assert.equal(named.isError, undefined, text(named));
      const claimed = named.structuredContent.id;
      assert.ok(await wasPooled([a, b], claimed), "a default create after the refill is served from the pool");
      const env = await call(ca, "run_code", { box: "claimed", code: "import os; os.environ['GREETING']" });
      assert.equal(env.structuredContent.result, "'hello pool'", text(env));
      const sh = await call(ca, "exec_command", { box: "claimed", command: 'echo "$GREETING"' });
      assert.equal(sh.structuredContent.stdout, "hello pool\n", text(sh));
      const list = await call(ca, "list_boxes", {});
      const listed = list.structuredContent.boxes.map((x) => x.id);
      assert.equal(listed.length, 7, "pooled boxes are not listed");
      assert.ok(listed.includes(claimed));
      // Another shape starts cold.
      const cold = await createAndRun(cb, { memory_mib: 256 });
      assert.equal(cold.warm, false);
      assert.ok(!pooledIds(a).concat(pooledIds(b)).includes(cold.id));
      for (const id of listed) await call(ca, "destroy_box", { box: id });
      await call(cb, "destroy_box", { box: cold.id });

      // Both servers die hard; the pooled boxes survive, and a server without --pool claims them.
      await waitReady(h, "jail", 2);
      const ready = fs.readdirSync(path.join(h, "boxes")); // every owner's box is destroyed: these are the pooled ones
      assert.equal(ready.length, 2);
      a.proc.kill("SIGKILL");
      b.proc.kill("SIGKILL");
      await ca.close().catch(() => {});
      await cb.close().catch(() => {});
      const c = await startHTTP(h, ["--stop-boxes-on-exit"]);
      const cc = await connect("http", { url: c.url });
      try {
        assert.match(poolLine(h, "jail"), / 2 ready of 2/);
        const after = await createAndRun(cc);
        assert.ok(ready.includes(after.id), `after the SIGKILL, ${after.id} is not one of the pooled ${ready}`);
        assert.equal(after.warm, true);
        await call(cc, "destroy_box", { box: after.id });
      } finally {
        await cc.close();
        await c.stop(); // --stop-boxes-on-exit drains the pool
      }
      assert.match(poolLine(h, "jail"), / 0 ready of 2, 0 filling/);
      for (const id of ready) assert.ok(!fs.existsSync(path.join(h, "boxes", id)), `drained box ${id} left its directory`);
    } finally {
      await ca.close().catch(() => {});
      await cb.close().catch(() => {});
    }
  });

  test("a rebuilt image replaces the pool", async () => {
    // A home with its own images/default: the cached image's files, linked,
    // and a manifest of its own. Rewriting the manifest is what a rebuild
    // (image build --force, or a refreshed agent) does to the image's
    // identity, without the minutes a real rebuild takes.
    const h = home();
    fs.unlinkSync(path.join(h, "images"));
    const src = path.join(CACHE, "images", "default");
    const dst = path.join(h, "images", "default");
    fs.mkdirSync(dst, { recursive: true });
    for (const f of fs.readdirSync(src)) {
      if (f === "manifest.json") fs.copyFileSync(path.join(src, f), path.join(dst, f));
      else fs.symlinkSync(path.join(src, f), path.join(dst, f));
    }
    const srv = await startHTTP(h, ["--pool", "jail=1", "--stop-boxes-on-exit"]);
    const client = await connect("http", { url: srv.url });
    try {
      await waitReady(h, "jail", 1);
      const [old] = await waitLogged([srv], 1);
      const manifest = JSON.parse(fs.readFileSync(path.join(dst, "manifest.json"), "utf8"));
      manifest.created = new Date().toISOString();
      fs.writeFileSync(path.join(dst, "manifest.json.tmp"), JSON.stringify(manifest, null, 2));
      fs.renameSync(path.join(dst, "manifest.json.tmp"), path.join(dst, "manifest.json"));
      const deadline = Date.now() + 120_000;
      while (pooledIds(srv).length < 2 && Date.now() < deadline) await sleep(300);
      await waitReady(h, "jail", 1);
      await waitLogged([srv], 2);
      const [, fresh] = pooledIds(srv);
      assert.ok(fresh && fresh !== old, "no new pooled box after the rebuild");
      assert.match(srv.log(), /reason="pooled box: its image was rebuilt"/);
      assert.ok(!fs.existsSync(path.join(h, "boxes", old)), "the old pooled box is gone");
      const made = await createAndRun(client);
      assert.equal(made.id, fresh, "the box of the new build is handed out");
      assert.equal(made.warm, true);
      await call(client, "destroy_box", { box: made.id });
    } finally {
      await client.close();
      await srv.stop();
    }
  });
});

describe("warm pool on the qemu engine", () => {
  test("a pooled VM answers its first print(1) from a running session", async () => {
    const h = home();
    const srv = await startHTTP(h, ["--engine", "qemu", "--pool", "qemu=1", "--stop-boxes-on-exit"]);
    const client = await connect("http", { url: srv.url });
    try {
      await waitReady(h, "qemu", 1, 300_000);
      const [pooled] = await waitLogged([srv], 1);
      const made = await createAndRun(client, { engine: "qemu" });
      assert.equal(made.id, pooled);
      assert.equal(made.warm, true);
      await call(client, "destroy_box", { box: made.id });
    } finally {
      await client.close();
      await srv.stop();
    }
    assert.match(poolLine(h, "qemu"), / 0 ready of 1/);
  });
});
