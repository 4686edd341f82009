// Test harness: starts the real boxlite-mcp binary and connects the official
// MCP TypeScript SDK client to it over stdio, streamable HTTP or SSE.
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { CallToolResultSchema } from "@modelcontextprotocol/sdk/types.js";
import Ajv2020 from "ajv/dist/2020.js";

export const BIN = process.env.BOXLITE_BIN ?? path.resolve(fileURLToPath(import.meta.url), "../../bin/boxlite-mcp");
const CACHE = process.env.BOXLITE_TEST_HOME ?? "/var/tmp/boxlite-test-home";
const SCHEMAS = path.resolve(fileURLToPath(import.meta.url), "../../schemas");

const homes = new Set();
const servers = new Set();

/** A fresh home sharing the cached images (built by `make test-image`). */
export function newHome() {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), "boxlite-e2e-"));
  fs.symlinkSync(path.join(CACHE, "images"), path.join(home, "images"));
  homes.add(home);
  return home;
}

// Boxes are detached by design and outlive their server: when a test fails
// half-way, kill whatever its homes still run, so nothing outlives the run
// (and the runner is never kept alive by a child).
function killLeftovers() {
  for (const p of servers) try { p.kill("SIGKILL"); } catch {}
  const ids = new Set();
  for (const home of homes) {
    try { for (const d of fs.readdirSync(path.join(home, "boxes"))) ids.add(d); } catch {}
  }
  if (ids.size === 0 && homes.size === 0) return;
  for (const pid of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8");
      const cg = fs.readFileSync(`/proc/${pid}/cgroup`, "utf8");
      const mine = [...homes].some((h) => cmd.includes(h)) || [...ids].some((id) => cg.includes(`/boxlite/${id}`) || cmd.includes(id));
      if (mine) process.kill(Number(pid), "SIGKILL");
    } catch {}
  }
  // Their cgroups (empty once the processes are gone: wait briefly).
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (const id of ids) {
    try { fs.rmdirSync(`/run/boxlite/mnt/${id}`); } catch {}
    for (const base of ["/sys/fs/cgroup/pids/boxlite", "/sys/fs/cgroup/memory/boxlite", "/sys/fs/cgroup/cpu/boxlite", "/sys/fs/cgroup/boxlite"]) {
      for (const d of [`${base}/${id}/work`, `${base}/${id}/agent`, `${base}/${id}`]) {
        for (let i = 0; i < 20 && fs.existsSync(d); i++) {
          try { fs.rmdirSync(d); } catch { Atomics.wait(pause, 0, 0, 25); }
        }
      }
    }
  }
}
process.on("exit", killLeftovers);

/** Starts `serve --transport http` on a free port; resolves once it listens. */
export async function startHTTP(home, extraArgs = []) {
  const proc = spawn(BIN, ["serve", "--transport", "http", "--listen", "127.0.0.1:0", "--home", home, "--engine", "jail", ...extraArgs], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  servers.add(proc);
  proc.on("exit", () => servers.delete(proc));
  let log = "";
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("server did not start:\n" + log)), 30_000);
    proc.stderr.on("data", (d) => {
      log += d;
      const m = log.match(/streamable HTTP: (http:\/\/[0-9.:]+)\/mcp/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    proc.on("exit", (code) => reject(new Error(`server exited ${code}:\n${log}`)));
  });
  proc.stderr.on("data", (d) => (log += d));
  return {
    url,
    proc,
    log: () => log,
    async stop() {
      if (proc.exitCode !== null) return;
      const exited = new Promise((r) => proc.on("exit", r));
      proc.kill("SIGTERM");
      await exited;
    },
  };
}

/** Connects an SDK client. kind: stdio | http | sse. */
export async function connect(kind, { home, url, token, headers = {}, engine = "jail" } = {}) {
  const h = { ...headers };
  if (token) h.Authorization = `Bearer ${token}`;
  let transport;
  let stderr = "";
  if (kind === "stdio") {
    transport = new StdioClientTransport({ command: BIN, args: ["serve", "--home", home, "--engine", engine], stderr: "pipe" });
    transport.stderr?.on("data", (d) => (stderr += d));
  } else if (kind === "http") {
    transport = new StreamableHTTPClientTransport(new URL(url + "/mcp"), { requestInit: { headers: h } });
  } else if (kind === "sse") {
    transport = new SSEClientTransport(new URL(url + "/sse"), {
      requestInit: { headers: h },
      eventSourceInit: { fetch: (u, init) => fetch(u, { ...init, headers: { ...(init?.headers ?? {}), ...h } }) },
    });
  } else {
    throw new Error("unknown transport " + kind);
  }
  const client = new Client({ name: "boxlite-e2e", version: "0.0.1" });
  await client.connect(transport);
  client.stderr = () => stderr;
  return client;
}

const ajv = new Ajv2020({ strict: false, allErrors: true });
const validators = new Map();

/** Validates a result's structuredContent against schemas/<tool>.output.json. */
export function validateOutput(tool, result) {
  if (!validators.has(tool)) {
    const schema = JSON.parse(fs.readFileSync(path.join(SCHEMAS, `${tool}.output.json`), "utf8"));
    validators.set(tool, ajv.compile(schema));
  }
  const validate = validators.get(tool);
  if (!validate(result.structuredContent)) {
    throw new Error(`${tool} output does not match schemas/${tool}.output.json: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(result.structuredContent)}`);
  }
}

/** Calls a tool; a successful result is checked against its published schema. */
export async function call(client, name, args, opts = {}) {
  const r = await client.callTool({ name, arguments: args }, CallToolResultSchema, { timeout: 300_000, ...opts });
  if (!r.isError) validateOutput(name, r);
  return r;
}

export function text(result) {
  return result.content.filter((c) => c.type === "text").map((c) => c.text).join("\n");
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
