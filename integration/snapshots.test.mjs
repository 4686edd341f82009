// Snapshots and clones end to end: the real boxlite-mcp binary driven by
// the official MCP TypeScript SDK over stdio. The jail cases run always;
// one lean qemu case (one boot, one snapshot, one clone) runs where
// qemu-system-x86_64 is installed.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { BIN, newHome, connect, call, text, sleep } from "./harness.mjs";

const ok = (r) => assert.equal(r.isError, undefined, text(r));
const sh = async (client, box, command) => {
  const r = await call(client, "exec_command", { box, command });
  ok(r);
  assert.equal(r.structuredContent.exit_code, 0, text(r));
  return r.structuredContent.stdout;
};
const snapDirs = (home) => {
  try {
    return fs.readdirSync(path.join(home, "snapshots"));
  } catch {
    return [];
  }
};

describe("snapshots on the jail engine", () => {
  let home, client, parent;
  before(async () => {
    home = newHome();
    client = await connect("stdio", { home, engine: "jail" });
    const r = await call(client, "create_box", { name: "parent", engine: "jail", disk_mib: 512 });
    ok(r);
    parent = r.structuredContent.id;
  });
  after(async () => {
    // Boxes outlive their server by design: destroy them before their home goes
    // (with the home gone, nothing could find them to kill them).
    await destroyAll(client);
    await client.close();
    fs.rmSync(home, { recursive: true, force: true });
  });

  test("snapshot, three clones with the files, independent of the parent and of each other", async () => {
    await sh(client, parent, "mkdir -p /root/work && echo before > /root/work/state && cp /etc/hostname /root/work/parent-host");
    const s = await call(client, "snapshot_box", { box: "parent", name: "base" });
    ok(s);
    assert.equal(s.structuredContent.includes_memory, false);
    assert.equal(s.structuredContent.engine, "jail");
    assert.equal(s.structuredContent.box, parent);
    assert.ok(s.structuredContent.bytes > 0);
    await sh(client, parent, "echo after > /root/work/state");

    const clones = [];
    for (let i = 0; i < 3; i++) {
      const c = await call(client, "create_box", { from_snapshot: "base", name: `clone${i}` });
      ok(c);
      assert.equal(c.structuredContent.engine, "jail");
      clones.push(c.structuredContent.id);
      assert.equal(await sh(client, `clone${i}`, "cat /root/work/state; hostname"), `before\nclone${i}\n`);
    }
    await sh(client, "clone0", "echo mine > /root/work/state");
    assert.equal(await sh(client, "clone1", "cat /root/work/state"), "before\n");
    assert.equal(await sh(client, "parent", "cat /root/work/state"), "after\n");

    const l = await call(client, "list_snapshots", {});
    ok(l);
    assert.deepEqual(l.structuredContent.snapshots.map((x) => x.name), ["base"]);
  });

  test("delete rules: names are unique, jail clones own their files, a deleted snapshot is gone", async () => {
    const dup = await call(client, "snapshot_box", { box: "parent", name: "base" });
    assert.equal(dup.isError, true);
    assert.match(text(dup), /already|used by snapshot/);
    const d = await call(client, "delete_snapshot", { snapshot: "base" });
    ok(d); // jail clones hold copies: nothing depends on it
    assert.deepEqual(snapDirs(home), []);
    assert.equal(await sh(client, "clone2", "cat /root/work/state"), "before\n");
    const again = await call(client, "create_box", { from_snapshot: "base" });
    assert.equal(again.isError, true);
    assert.match(text(again), /no snapshot matches/);
    const gone = await call(client, "delete_snapshot", { snapshot: "base" });
    assert.equal(gone.isError, true);
  });
});

describe("a snapshot interrupted by killing the server", () => {
  test("leaves nothing half-made, and the box runs on", async (t) => {
    const home = newHome();
    let transport = new StdioClientTransport({ command: BIN, args: ["serve", "--home", home, "--engine", "jail"], stderr: "pipe" });
    let client = new Client({ name: "snap-kill", version: "0.0.1" });
    await client.connect(transport);
    try {
      const r = await call(client, "create_box", { name: "big", engine: "jail", disk_mib: 2048 });
      ok(r);
      // Enough data that the copy takes a while (where the home has no reflinks).
      await sh(client, "big", "head -c 600000000 /dev/urandom > /root/blob && sync");
      let caught = false;
      for (let attempt = 0; attempt < 5 && !caught; attempt++) {
        const pending = client.callTool({ name: "snapshot_box", arguments: { box: "big" } }).catch(() => null);
        for (let i = 0; i < 4000; i++) {
          if (snapDirs(home).some((d) => d.startsWith(".tmp-"))) {
            process.kill(transport.pid, "SIGKILL");
            caught = true;
            break;
          }
          await sleep(1);
        }
        const done = await pending;
        if (!caught) {
          // Too fast to catch (reflinks): delete it and try again.
          if (done && !done.isError) ok(await call(client, "delete_snapshot", { snapshot: done.structuredContent.snapshot }));
        }
      }
      if (!caught) {
        t.skip("the snapshot finished before it could be interrupted");
        return;
      }
      await client.close().catch(() => {});
      transport = new StdioClientTransport({ command: BIN, args: ["serve", "--home", home, "--engine", "jail"], stderr: "pipe" });
      client = new Client({ name: "snap-kill-2", version: "0.0.1" });
      await client.connect(transport);
      const l = await call(client, "list_snapshots", {});
      ok(l);
      assert.deepEqual(l.structuredContent.snapshots, []);
      assert.deepEqual(snapDirs(home), [], "half-made snapshot files left");
      // The box was frozen during the copy: the new server thawed it.
      assert.equal(await sh(client, "big", "echo alive"), "alive\n");
      const s = await call(client, "snapshot_box", { box: "big", name: "after-crash" });
      ok(s);
    } finally {
      await destroyAll(client);
      await client.close().catch(() => {});
      fs.rmSync(home, { recursive: true, force: true });
    }
  });
});

/** Destroys every box the client's owner has (best effort: a cleanup). */
async function destroyAll(client) {
  try {
    const l = await call(client, "list_boxes", {});
    for (const b of l.structuredContent?.boxes ?? []) await call(client, "destroy_box", { box: b.id });
  } catch {}
}

let haveQEMU = true;
try {
  execFileSync("sh", ["-c", "command -v qemu-system-x86_64"]);
} catch {
  haveQEMU = false;
}

describe("a memory snapshot on the qemu engine", { skip: !haveQEMU && "qemu-system-x86_64 not installed" }, () => {
  test("a clone has the files and the live Python session; backed clones hold the snapshot", async () => {
    const home = newHome();
    const client = await connect("stdio", { home, engine: "qemu" });
    try {
      const p = await call(client, "create_box", { name: "vm", engine: "qemu" });
      ok(p);
      await sh(client, "vm", "echo before > /root/state");
      let r = await call(client, "run_code", { box: "vm", code: "secret = 6 * 7\nsecret" });
      ok(r);
      assert.equal(r.structuredContent.result, "42");
      const s = await call(client, "snapshot_box", { box: "vm", name: "vmsnap" });
      ok(s);
      assert.equal(s.structuredContent.includes_memory, true);
      await sh(client, "vm", "echo after > /root/state");

      const c = await call(client, "create_box", { from_snapshot: "vmsnap", name: "vmclone" });
      ok(c);
      r = await call(client, "run_code", { box: "vmclone", code: "secret + 1" });
      ok(r);
      assert.equal(r.structuredContent.result, "43", "the session variable set before the snapshot");
      assert.equal(r.structuredContent.session.restarted, false);
      assert.equal(await sh(client, "vmclone", "cat /root/state; hostname"), "before\nvmclone\n");
      await sh(client, "vmclone", "echo clone > /root/state");
      assert.equal(await sh(client, "vm", "cat /root/state"), "after\n");
      r = await call(client, "run_code", { box: "vm", code: "secret" });
      assert.equal(r.structuredContent.result, "42");

      const refused = await call(client, "delete_snapshot", { snapshot: "vmsnap" });
      assert.equal(refused.isError, true);
      assert.match(text(refused), new RegExp(c.structuredContent.id));
      ok(await call(client, "destroy_box", { box: "vmclone" }));
      ok(await call(client, "delete_snapshot", { snapshot: "vmsnap" }));
      assert.deepEqual(snapDirs(home), []);
      ok(await call(client, "destroy_box", { box: "vm" }));
    } finally {
      await client.close();
      fs.rmSync(home, { recursive: true, force: true });
    }
  });
});
