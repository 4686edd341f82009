// Network e2e: the real boxlite-mcp binary, run inside the lab's "host"
// network namespace (netlab.sh), drives jail and qemu boxes with each
// network policy against the lab's internet. No packet leaves the machine.
// Needs root and iproute2; skipped otherwise.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { BIN, newHome, call, text } from "./harness.mjs";

const DIR = path.dirname(fileURLToPath(import.meta.url));
const NETLAB = path.join(DIR, "netlab.sh");
const TAG = String(process.pid % 100000);
const HOST_PORT = 7071; // a service of the host itself, on all its addresses
const skip = process.getuid?.() !== 0 || spawnSync("ip", ["-V"]).status !== 0 ? "needs root and iproute2 (ip)" : false;

// probe resolves and connects to each "label host port" line of stdin and
// prints one JSON result per line (what the server said, or the error).
const PROBE = `import json, socket, sys, time
for line in sys.stdin.read().split("\\n"):
    if not line.strip():
        continue
    label, host, port = line.split()
    t0 = time.time(); r = {"label": label}
    try:
        addr = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
        s = socket.create_connection((addr, int(port)), timeout=8); s.settimeout(8)
        r["said"] = s.recv(64).decode().strip(); s.close()
    except Exception as e:
        r["err"] = type(e).__name__ + ": " + str(e)
    r["ms"] = int((time.time() - t0) * 1000)
    print(json.dumps(r), flush=True)
`;

const children = [];
let resolvConf, peakFile;

function startServers(where, ...args) {
  const p = spawn(NETLAB, ["run", TAG, where, process.execPath, path.join(DIR, "netlab-servers.mjs"), ...args], { stdio: ["ignore", "pipe", "inherit"] });
  children.push(p);
  return new Promise((resolve, reject) => {
    p.stdout.on("data", (d) => String(d).includes("ready") && resolve());
    p.on("exit", (code) => reject(new Error(`lab servers (${where}) exited ${code}`)));
  });
}

before(async () => {
  if (skip) return;
  spawnSync(NETLAB, ["down", TAG]);
  const up = spawnSync(NETLAB, ["up", TAG], { encoding: "utf8" });
  assert.equal(up.status, 0, up.stderr);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "boxlite-netlab-"));
  resolvConf = path.join(dir, "resolv.conf");
  fs.writeFileSync(resolvConf, "nameserver 192.0.2.53\n");
  peakFile = path.join(dir, "peak");
  await startServers("inet", "inet", peakFile);
  await startServers("host", "host", String(HOST_PORT));
});

after(() => {
  for (const p of children) p.kill("SIGKILL");
  if (!skip) spawnSync(NETLAB, ["down", TAG]);
});

async function connectInLab(home, engine) {
  const transport = new StdioClientTransport({
    command: NETLAB,
    args: ["run", TAG, "host", BIN, "serve", "--home", home, "--engine", engine, "--resolv-conf", resolvConf],
    stderr: "pipe",
  });
  let stderr = "";
  transport.stderr?.on("data", (d) => (stderr += d));
  const client = new Client({ name: "boxlite-network-e2e", version: "0.0.1" });
  await client.connect(transport);
  client.stderr = () => stderr;
  return client;
}

async function probe(client, box, lines) {
  const r = await call(client, "exec_command", { box, command: `python3 -c '${PROBE.replaceAll("'", "'\\''")}'`, stdin: lines.join("\n"), timeout_seconds: 120 });
  assert.equal(r.isError, undefined, text(r));
  const out = {};
  for (const l of r.structuredContent.stdout.trim().split("\n")) {
    const j = JSON.parse(l);
    out[j.label] = j;
  }
  return { results: out, denied: r.structuredContent.network_denied ?? [], text: text(r) };
}

const refusedFast = (r) => /ConnectionRefused/.test(r?.err ?? "") && r.ms < 3000;
const nameRefused = (r) => /gaierror/.test(r?.err ?? "");
const deniedHost = (denied, host) => denied.find((d) => d.host === host);

for (const engine of ["jail", "qemu"]) {
  describe(`network on ${engine}`, { skip }, () => {
    let home, client;
    before(async () => {
      home = newHome();
      client = await connectInLab(home, engine);
    });
    after(async () => {
      try {
        const list = await call(client, "list_boxes", {});
        for (const b of list.structuredContent.boxes) await call(client, "destroy_box", { box: b.id });
      } finally {
        await client.close();
        fs.rmSync(home, { recursive: true, force: true });
      }
    });

    test("network: false has only lo", async () => {
      const c = await call(client, "create_box", { name: "off", engine, memory_mib: 256 });
      assert.equal(c.isError, undefined, text(c));
      const r = await call(client, "exec_command", { box: "off", command: "python3 -c 'import socket; print([n for _, n in socket.if_nameindex()])'" });
      assert.equal(r.structuredContent.stdout.trim(), "['lo']");
    });

    test("allow list: listed name and IP reachable, the rest refused at once and reported", async () => {
      const c = await call(client, "create_box", { name: "allow", engine, memory_mib: 256, network_allow: ["allowed.test", "203.0.113.10:80", "rebind.test"] });
      assert.equal(c.isError, undefined, text(c));
      const { results: r, denied, text: t } = await probe(client, "allow", [
        "name allowed.test 80",
        "ip 203.0.113.10 80",
        "unlisted other.test 80",
        "private 10.99.0.10 80",
        "rebind rebind.test 80",
        `host 198.51.100.1 ${HOST_PORT}`,
        `gateway 192.168.127.1 ${HOST_PORT}`,
      ]);
      assert.equal(r.name.said, "public", JSON.stringify(r.name));
      assert.equal(r.ip.said, "other", JSON.stringify(r.ip));
      for (const l of ["private", "host", "gateway"]) assert.ok(refusedFast(r[l]), `${l}: ${JSON.stringify(r[l])}`);
      for (const l of ["unlisted", "rebind"]) assert.ok(nameRefused(r[l]), `${l}: ${JSON.stringify(r[l])}`);
      assert.match(deniedHost(denied, "other.test")?.reason ?? "", /allow list/);
      assert.match(deniedHost(denied, "rebind.test")?.reason ?? "", /rebinding/);
      assert.match(deniedHost(denied, "10.99.0.10")?.reason ?? "", /RFC 1918/);
      assert.match(deniedHost(denied, "198.51.100.1")?.reason ?? "", /address of the host/);
      assert.match(t, /network policy \(only allowed.test, 203.0.113.10:80, rebind.test\) refused/);
      // A call that is refused nothing reports nothing.
      const quiet = await call(client, "exec_command", { box: "allow", command: "true" });
      assert.equal(quiet.structuredContent.network_denied, undefined);
      // run_code reports too.
      const rc = await call(client, "run_code", { box: "allow", language: "bash", code: "timeout 5 bash -c 'echo > /dev/tcp/10.99.0.10/80' || echo refused" });
      assert.match(rc.structuredContent.stdout, /refused/);
      assert.match(deniedHost(rc.structuredContent.network_denied ?? [], "10.99.0.10")?.reason ?? "", /RFC 1918/);
      // list_boxes: the policy and the traffic.
      const list = await call(client, "list_boxes", {});
      const me = list.structuredContent.boxes.find((b) => b.name === "allow");
      assert.equal(me.network.mode, "allowlist");
      assert.deepEqual(me.network.allow, ["allowed.test", "203.0.113.10:80", "rebind.test"]);
      assert.ok(me.network.bytes_sent > 0 && me.network.bytes_received > 0, JSON.stringify(me.network));
      assert.equal(list.structuredContent.boxes.find((b) => b.name === "off").network.mode, "off");
    });

    test("network: true reaches public hosts only", async () => {
      const c = await call(client, "create_box", { name: "public", engine, memory_mib: 256, network: true });
      assert.equal(c.isError, undefined, text(c));
      const { results: r, denied } = await probe(client, "public", [
        "public allowed.test 80",
        "other other.test 80",
        "private 10.99.0.10 80",
        "rebind rebind.test 80",
        `host 198.51.100.1 ${HOST_PORT}`,
        `hostname host.test ${HOST_PORT}`,
        `gateway 192.168.127.1 ${HOST_PORT}`,
        `slirp 10.0.2.2 ${HOST_PORT}`,
        "metadata 169.254.169.254 80",
      ]);
      assert.equal(r.public.said, "public");
      assert.equal(r.other.said, "other");
      for (const l of ["private", "host", "gateway", "slirp", "metadata"]) assert.ok(refusedFast(r[l]), `${l}: ${JSON.stringify(r[l])}`);
      for (const l of ["rebind", "hostname"]) assert.ok(nameRefused(r[l]), `${l}: ${JSON.stringify(r[l])}`);
      assert.match(deniedHost(denied, "169.254.169.254")?.reason ?? "", /metadata/);
      assert.match(deniedHost(denied, "rebind.test")?.reason ?? "", /rebinding/);
    });

    test("a connection flood stays bounded", async () => {
      const script = `import socket
ok, refused, other, conns = 0, 0, 0, []
for i in range(300):
    try:
        conns.append(socket.create_connection(("192.0.2.10", 81), timeout=5)); ok += 1
    except ConnectionRefusedError:
        refused += 1
    except Exception:
        other += 1
print(ok, refused, other)`;
      const r = await call(client, "exec_command", { box: "public", command: `python3 -c '${script}'`, timeout_seconds: 120 });
      const [ok, refused, other] = r.structuredContent.stdout.trim().split(" ").map(Number);
      assert.ok(ok > 0 && ok <= 256 && ok + refused === 300 && other === 0, `flood: ${r.structuredContent.stdout} ${r.structuredContent.stderr}`);
      assert.ok(Number(fs.readFileSync(peakFile, "utf8")) <= 256, "the server held more than 256 of the box's connections at once");
      assert.match(deniedHost(r.structuredContent.network_denied ?? [], "192.0.2.10")?.reason ?? "", /too many connections/);
    });

    if (engine === "jail") {
      test("the box's network outlives the server", async () => {
        await client.close();
        client = await connectInLab(home, engine);
        const { results: r, denied } = await probe(client, "allow", ["name allowed.test 80", "private 10.99.0.10 80"]);
        assert.equal(r.name.said, "public");
        assert.ok(refusedFast(r.private));
        assert.ok(deniedHost(denied, "10.99.0.10"));
      });
    }
  });
}
