// OCI images end to end: a loopback registry (internal/cmd/testregistry)
// serves ordinary images built from the default image's tree, and the real
// boxlite-mcp binary (jail engine) pulls them when create_box names them,
// over MCP through the official TypeScript SDK.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { BIN, newHome, call, text, sleep } from "./harness.mjs";

const REPO = path.resolve(fileURLToPath(import.meta.url), "../..");
const CACHE = process.env.BOXLITE_TEST_HOME ?? "/var/tmp/boxlite-test-home";
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "boxlite-oci-"));
const registries = [];

/** Builds the registry helper once. */
function helper() {
  const out = path.join(tmp, "testregistry");
  if (!fs.existsSync(out)) {
    const r = spawnSync("go", ["build", "-o", out, "./internal/cmd/testregistry"], { cwd: REPO, encoding: "utf8" });
    if (r.status !== 0) throw new Error("building testregistry: " + r.stderr);
  }
  return out;
}

/** Starts a registry serving test/python:1 and test/nopython:1; resolves to its address. */
async function startRegistry(extra = []) {
  const proc = spawn(helper(), ["-rootfs", path.join(CACHE, "images/default/rootfs"), ...extra], { stdio: ["pipe", "pipe", "pipe"] });
  registries.push(proc);
  let out = "";
  return new Promise((resolve, reject) => {
    // Building the layer tars and gzips the default rootfs (over 1 GiB with the data stack): minutes on a busy machine.
    const timer = setTimeout(() => reject(new Error("registry did not start: " + out)), 600_000);
    proc.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/READY (\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    proc.stderr.on("data", (d) => (out += d));
    proc.on("exit", (c) => reject(new Error(`registry exited ${c}: ${out}`)));
  });
}

/** A home of its own (pulled images must not land in the shared cache). */
function ociHome() {
  const home = newHome(); // registered for the harness's cleanup
  fs.unlinkSync(path.join(home, "images"));
  fs.mkdirSync(path.join(home, "images"));
  return home;
}

/** Connects over stdio to `serve` with extra flags. */
async function serve(home, extra = []) {
  const transport = new StdioClientTransport({ command: BIN, args: ["serve", "--home", home, "--engine", "jail", ...extra], stderr: "pipe" });
  let stderr = "";
  transport.stderr?.on("data", (d) => (stderr += d));
  const client = new Client({ name: "boxlite-oci-e2e", version: "0.0.1" });
  await client.connect(transport);
  client.stderr = () => stderr;
  client.pid = () => transport.pid;
  return client;
}

async function destroyAll(client) {
  const list = await call(client, "list_boxes", {});
  for (const b of list.structuredContent.boxes) await call(client, "destroy_box", { box: b.id });
}

function cli(...args) {
  return spawnSync(BIN, args, { encoding: "utf8" });
}

function entries(dir) {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

after(() => {
  for (const p of registries) try { p.kill("SIGKILL"); } catch {}
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe("OCI images", () => {
  let addr, home, client;
  before(async () => {
    addr = await startRegistry();
    home = ociHome();
    client = await serve(home);
  });
  after(async () => {
    try {
      await destroyAll(client);
    } finally {
      await client.close();
    }
  });

  test("create_box pulls a reference with byte progress and applies the image config", async () => {
    const seen = [];
    const r = await call(client, "create_box", { image: `${addr}/test/python:1` }, { onprogress: (p) => seen.push(p), resetTimeoutOnProgress: true });
    assert.equal(r.isError, undefined, text(r));
    assert.ok(seen.some((p) => p.total > 1 << 20 && p.progress <= p.total && /pulling/.test(p.message)), JSON.stringify(seen.slice(0, 5)));
    assert.ok(seen.every((p, i) => i === 0 || p.progress > seen[i - 1].progress), "progress only grows");
    const box = r.structuredContent.id;
    const e = await call(client, "exec_command", { box, command: 'id -un; pwd; echo "$GREETING"' });
    assert.equal(e.structuredContent.stdout, "nobody\n/srv/work\nfrom-image\n");
    const py = await call(client, "run_code", { box, code: "import os; print(6*7, os.getuid())", fresh: true });
    assert.equal(py.structuredContent.stdout, "42 65534\n", text(py));

    // A second box of the same reference does not pull again.
    const again = [];
    const r2 = await call(client, "create_box", { image: `${addr}/test/python:1` }, { onprogress: (p) => again.push(p) });
    assert.equal(r2.isError, undefined, text(r2));
    assert.ok(!again.some((p) => p.total), "no download the second time");

    // image list names the image, its reference and its boxes; rm refuses while they exist.
    const list = cli("image", "list", "--home", home);
    assert.match(list.stdout, new RegExp(`${r.structuredContent.image}\\s+${addr.replace(/\./g, "\\.")}/test/python:1\\s+sha256:\\S+\\s+\\d+ MiB\\s+\\S+ \\S+\\s+2`));
    const rm = cli("image", "rm", r.structuredContent.image, "--home", home);
    assert.notEqual(rm.status, 0);
    assert.match(rm.stderr, /used by 2 box/);
  });

  test("an image without Python runs commands and says what run_code lacks", async () => {
    const r = await call(client, "create_box", { image: `${addr}/test/nopython:1` });
    assert.equal(r.isError, undefined, text(r));
    const box = r.structuredContent.id;
    const e = await call(client, "exec_command", { box, command: "echo hi; id -u; pwd" });
    assert.equal(e.structuredContent.stdout, "hi\n0\n/root\n");
    const fresh = await call(client, "run_code", { box, code: "print(1)", fresh: true });
    assert.equal(fresh.isError, true);
    assert.match(text(fresh), /has no python3/);
    const session = await call(client, "run_code", { box, code: "print(1)" });
    assert.equal(session.isError, true);
    assert.match(text(session), /python3/);
    // The two images share their base layer in the cache.
    assert.equal(entries(path.join(home, "layers/sha256")).filter((n) => /^[0-9a-f]{64}$/.test(n)).length, 2);
  });

  test("rm and prune once no box uses an image", async () => {
    await destroyAll(client);
    for (const name of entries(path.join(home, "images")).filter((n) => !n.startsWith("."))) {
      const rm = cli("image", "rm", name, "--home", home);
      assert.equal(rm.status, 0, rm.stderr);
    }
    const prune = cli("image", "prune", "--home", home);
    assert.equal(prune.status, 0, prune.stderr);
    assert.match(prune.stdout, /removed 2 unreferenced layers/);
  });
});

describe("OCI policy", () => {
  let addr;
  before(async () => {
    addr = await startRegistry();
  });

  for (const [flags, want] of [
    [["--allow-image", "docker.io/library/*"], /not allowed/],
    [["--pull", "never"], /does not pull/],
  ]) {
    test(`serve ${flags.join(" ")} refuses`, async () => {
      const home = ociHome();
      const client = await serve(home, flags);
      try {
        const r = await call(client, "create_box", { image: `${addr}/test/nopython:1` });
        assert.equal(r.isError, true);
        assert.match(text(r), want);
        assert.deepEqual(entries(path.join(home, "images")).filter((n) => !n.startsWith(".")), []);
      } finally {
        await client.close();
      }
    });
  }

  test("a server killed in the middle of a pull leaves no image; the next pull succeeds", async () => {
    const slow = await startRegistry(["-slow-first", String(8 << 20)]);
    const home = ociHome();
    const ref = `${slow}/test/python:1`;
    let client = await serve(home);
    const pid = client.pid();
    let killed = false;
    const pending = call(client, "create_box", { image: ref }, {
      onprogress: (p) => {
        if (!killed && p.total && p.progress > 4 << 20) {
          killed = true;
          process.kill(pid, "SIGKILL");
        }
      },
      resetTimeoutOnProgress: true,
    }).catch((e) => e);
    await pending;
    assert.ok(killed, "the pull was killed half-way");
    await client.close().catch(() => {});
    assert.deepEqual(entries(path.join(home, "images")).filter((n) => !n.startsWith(".")), [], "no image after the kill");

    client = await serve(home);
    try {
      const r = await call(client, "create_box", { image: ref });
      assert.equal(r.isError, undefined, text(r));
      const e = await call(client, "exec_command", { box: r.structuredContent.id, command: "echo ok" });
      assert.equal(e.structuredContent.stdout, "ok\n");
      assert.deepEqual(entries(path.join(home, "images")).filter((n) => n.startsWith(".pull-")), [], "leftovers cleaned");
      assert.deepEqual(entries(path.join(home, "layers/sha256")).filter((n) => n.startsWith(".tmp-")), [], "no partial blob");
      await destroyAll(client);
    } finally {
      await client.close();
    }
  });
});
