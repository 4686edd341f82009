// The Kubernetes engine end to end, on a real single-node cluster built
// here (internal/cmd/testcluster: etcd, kube-apiserver, kube-scheduler,
// kubelet, containerd, runc, bridge CNI, all on loopback): the real
// boxlite-mcp binary driven by the official MCP TypeScript SDK over
// streamable HTTP, with the cluster's API read through the admin
// kubeconfig (testcluster api). `make test-k8s` brings the cluster up,
// runs this file with K8S_CLUSTER=<its dir>, and tears it down.
//
// The servers use the RBAC-limited identity (namespace boxlite only), as a
// production server would.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { newHome, startHTTP, connect, call, text, sleep, BIN } from "./harness.mjs";

const DIR = process.env.K8S_CLUSTER;
const TESTCLUSTER = process.env.TESTCLUSTER_BIN;
const skip = !DIR || !TESTCLUSTER;
const cluster = skip ? {} : JSON.parse(fs.readFileSync(path.join(DIR, "cluster.json"), "utf8"));
const NS = cluster.namespace;

/** An admin request to the cluster's API (JSON in and out). */
function api(method, urlPath, body) {
  const args = ["api", "--dir", DIR, method, urlPath];
  if (body !== undefined) args.push(JSON.stringify(body));
  const out = execFileSync(TESTCLUSTER, args, { encoding: "utf8", timeout: 60_000 });
  return out.trim() ? JSON.parse(out) : null;
}

const podsOf = (id) => api("GET", `/api/v1/namespaces/${NS}/pods?labelSelector=boxlite.dev%2Fid%3D${id}`).items;

function tokenFile(home) {
  const f = path.join(home, "tokens");
  fs.writeFileSync(f, "alice tok-alice-0123456789abcdef\nbob tok-bob-0123456789abcdef0\n", { mode: 0o600 });
  return f;
}

const k8sArgs = (home, extra = []) => ["--engine", "k8s", "--kubeconfig", cluster.kubeconfig_boxlite, "--k8s-namespace", NS,
  "--k8s-agent-image", cluster.agent_image ?? "boxlite-agent:test", "--k8s-default-image", "test/plain:1", "--token-file", tokenFile(home), ...extra];

describe("k8s engine on a real cluster", { skip: skip && "K8S_CLUSTER and TESTCLUSTER_BIN not set (make test-k8s sets them)" }, () => {
  const homes = [];
  const servers = [];
  const clients = [];
  async function server(extra = [], home = newHome()) {
    homes.push(home);
    const s = await startHTTP(home, k8sArgs(home, extra));
    servers.push(s);
    return { home, s };
  }
  async function client(s, who = "alice") {
    const c = await connect("http", { url: s.url, token: who === "alice" ? "tok-alice-0123456789abcdef" : "tok-bob-0123456789abcdef0" });
    clients.push(c);
    return c;
  }
  after(async () => {
    for (const c of clients) try { await c.close(); } catch {}
    for (const s of servers) try { await s.stop(); } catch {}
    // Whatever a failed case left in the namespace.
    try {
      for (const p of api("GET", `/api/v1/namespaces/${NS}/pods`).items) api("DELETE", `/api/v1/namespaces/${NS}/pods/${p.metadata.name}?gracePeriodSeconds=0`);
    } catch {}
    for (const h of homes) fs.rmSync(h, { recursive: true, force: true });
  });

  let A, B, alice, aliceB, box;
  before(async () => {
    A = await server();
    B = await server();
    alice = await client(A.s);
    aliceB = await client(B.s);
  });

  test("doctor reports the cluster, its runtime class and the missing NetworkPolicy enforcer", () => {
    const out = execFileSync(BIN, ["doctor", "--home", A.home, "--kubeconfig", cluster.kubeconfig_boxlite, "--k8s-namespace", NS,
      "--k8s-runtime-class", cluster.runtime_class], { encoding: "utf8", timeout: 60_000 });
    assert.match(out, /k8s\s+usable: Kubernetes v1\.37\.2/, out);
    assert.match(out, new RegExp(`runtime class ${cluster.runtime_class} \\(handler runc\\)`), out);
    assert.match(out, /NetworkPolicy enforcement: (NONE FOUND|unknown)/, out);
  });

  test("create, run, files, a session, with limits in the pod spec", async () => {
    let r = await call(alice, "create_box", { name: "k8s-one", cpus: 1, memory_mib: 384, disk_mib: 1024, env: { COLOR: "teal" } });
    assert.equal(r.isError, undefined, text(r));
    box = r.structuredContent.id;
    assert.equal(r.structuredContent.engine, "k8s");
    const [pod] = podsOf(box);
    assert.ok(pod, "no pod labelled with the box id");
    const c = pod.spec.containers[0];
    assert.equal(c.resources.limits.memory, "384Mi");
    assert.equal(c.resources.requests.memory, "384Mi");
    assert.equal(String(c.resources.limits.cpu), "1");
    assert.equal(c.resources.limits["ephemeral-storage"], "1Gi");
    assert.equal(pod.spec.automountServiceAccountToken, false);
    assert.equal(pod.spec.containers[0].image, "test/plain:1");

    r = await call(alice, "run_code", { box, language: "bash", code: "echo $COLOR; id -u; hostname" });
    assert.equal(r.structuredContent.exit_code, 0, text(r));
    assert.match(r.structuredContent.stdout, /^teal\n0\nk8s-one\n$/);
    r = await call(alice, "write_file", { box, path: "/root/data/hello.txt", content: "hi from k8s\n" });
    assert.equal(r.isError, undefined, text(r));
    r = await call(alice, "read_file", { box, path: "/root/data/hello.txt" });
    assert.equal(r.structuredContent.content, "hi from k8s\n");
    r = await call(alice, "run_code", { box, code: "x = 41\nprint('set')" });
    assert.equal(r.structuredContent.stdout, "set\n", text(r));
    r = await call(alice, "run_code", { box, code: "x + 1" });
    assert.equal(r.structuredContent.result, "42", text(r));
    // network: false (the default) is a deny-all NetworkPolicy for the pod.
    const np = api("GET", `/apis/networking.k8s.io/v1/namespaces/${NS}/networkpolicies/box-${box}`);
    assert.deepEqual(np.spec.policyTypes.sort(), ["Egress", "Ingress"]);
    assert.equal(np.spec.egress, undefined);
  });

  test("a second server sharing the cluster lists and uses the box; names stay unique across servers", async () => {
    let r = await call(aliceB, "list_boxes", {});
    const seen = r.structuredContent.boxes.find((b) => b.id === box);
    assert.ok(seen, "server B does not list the box made through A: " + text(r));
    assert.equal(seen.name, "k8s-one");
    // Its interpreter session is the same one: the state lives in the box.
    r = await call(aliceB, "run_code", { box: "k8s-one", code: "x * 2" });
    assert.equal(r.structuredContent.result, "82", text(r));
    r = await call(aliceB, "create_box", { name: "k8s-one" });
    assert.equal(r.isError, true);
    assert.match(text(r), /already exists|is used by box/);
  });

  test("a timeout interrupts the running code through port-forward and keeps the session", async () => {
    const progress = [];
    let r = await call(alice, "run_code", { box, code: "import time\nfor i in range(1000):\n    print('tick', i, flush=True)\n    time.sleep(0.2)", timeout_seconds: 3 },
      { onprogress: (p) => progress.push(p) });
    assert.match(r.structuredContent.stdout, /tick 0\n/, text(r));
    assert.equal(r.structuredContent.timed_out, true, text(r));
    assert.equal(r.structuredContent.error.name, "KeyboardInterrupt", text(r));
    assert.equal(r.structuredContent.session.restarted, false, text(r));
    assert.ok(progress.some((p) => /tick \d/.test(p.message ?? "")), `progress carries the latest output line: ${JSON.stringify(progress)}`);
    r = await call(alice, "run_code", { box, code: "x" });
    assert.equal(r.structuredContent.result, "41", "state lost after the interrupt: " + text(r));
    r = await call(alice, "exec_command", { box, command: "sh -c 'echo out; echo err >&2; exit 3'" });
    assert.equal(r.structuredContent.exit_code, 3, text(r));
    assert.equal(r.structuredContent.stdout, "out\n");
    assert.equal(r.structuredContent.stderr, "err\n");
  });

  test("another tenant neither sees nor reaches the box", async () => {
    const bob = await client(A.s, "bob");
    let r = await call(bob, "list_boxes", {});
    assert.ok(!r.structuredContent.boxes.some((b) => b.id === box), "bob lists alice's box");
    r = await call(bob, "run_code", { box, language: "bash", code: "echo pwned" });
    assert.equal(r.isError, true);
    assert.match(text(r), /no box matches/);
    r = await call(bob, "destroy_box", { box });
    assert.equal(r.isError, true);
    assert.equal(podsOf(box).length, 1, "bob's destroy touched alice's pod");
  });

  test("a restarted server reattaches to the running box, session state intact", async () => {
    await A.s.stop();
    const again = await startHTTP(A.home, k8sArgs(A.home));
    servers.push(again);
    const c = await client(again);
    const r = await call(c, "run_code", { box, code: "x" });
    assert.equal(r.structuredContent.result, "41", text(r));
    A = { home: A.home, s: again };
    alice = c;
  });

  test("the image's env, working directory and user apply (from the runtime)", async () => {
    let r = await call(alice, "create_box", { image: "test/python:1" });
    assert.equal(r.isError, undefined, text(r));
    const id = r.structuredContent.id;
    r = await call(alice, "run_code", { box: id, language: "bash", code: "echo $GREETING; pwd; id -un" });
    assert.equal(r.structuredContent.stdout, "from-image\n/srv/work\nnobody\n", text(r));
    r = await call(alice, "destroy_box", { box: id });
    assert.equal(r.isError, undefined, text(r));
  });

  test("a box whose image cannot be pulled fails fast with the reason, leaving nothing", async () => {
    const r = await call(alice, "create_box", { image: "test/does-not-exist:1" });
    assert.equal(r.isError, true);
    assert.match(text(r), /cannot be pulled/);
    const pods = api("GET", `/api/v1/namespaces/${NS}/pods`).items.filter((p) => p.spec.containers[0].image === "test/does-not-exist:1");
    assert.deepEqual(pods.map((p) => p.metadata.name), []);
  });

  test("a pod deleted behind the servers' back shows as gone", async () => {
    let r = await call(alice, "create_box", {});
    const id = r.structuredContent.id;
    const [pod] = podsOf(id);
    api("DELETE", `/api/v1/namespaces/${NS}/pods/${pod.metadata.name}?gracePeriodSeconds=0`);
    for (let i = 0; i < 100 && podsOf(id).length; i++) await sleep(200);
    for (const c of [alice, aliceB]) {
      r = await call(c, "list_boxes", {});
      assert.ok(!r.structuredContent.boxes.some((b) => b.id === id), "a deleted pod's box is still listed: " + text(r));
    }
    r = await call(alice, "run_code", { box: id, language: "bash", code: "true" });
    assert.equal(r.isError, true);
  });

  test("a server with a runtime class runs boxes under it", async () => {
    const R = await server(["--k8s-runtime-class", cluster.runtime_class]);
    const c = await client(R.s);
    let r = await call(c, "create_box", {});
    assert.equal(r.isError, undefined, text(r));
    const id = r.structuredContent.id;
    assert.equal(podsOf(id)[0].spec.runtimeClassName, cluster.runtime_class);
    r = await call(c, "run_code", { box: id, language: "bash", code: "echo ok" });
    assert.equal(r.structuredContent.stdout, "ok\n", text(r));
    await call(c, "destroy_box", { box: id });
  });

  test("destroy through the other server removes the pod and its policy", async () => {
    const r = await call(aliceB, "destroy_box", { box });
    assert.equal(r.isError, undefined, text(r));
    assert.equal(podsOf(box).length, 0);
    assert.throws(() => api("GET", `/apis/networking.k8s.io/v1/namespaces/${NS}/networkpolicies/box-${box}`));
    const list = await call(alice, "list_boxes", {});
    assert.ok(!list.structuredContent.boxes.some((b) => b.id === box));
  });
});
