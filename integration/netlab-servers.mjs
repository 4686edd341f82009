// The lab's servers (see netlab.sh), run inside its namespaces:
//   node netlab-servers.mjs inet PEAKFILE  the internet's hosts and its DNS server
//   node netlab-servers.mjs host PORT      a service of the host itself, on every address
// Each TCP server says its name and closes; port 81 of 192.0.2.10 keeps its
// connections open and writes the most it held at once to PEAKFILE. Prints
// "ready" once everything listens.
import net from "node:net";
import dgram from "node:dgram";
import fs from "node:fs";

export const RECORDS = {
  "allowed.test": "192.0.2.10",
  "other.test": "203.0.113.10",
  "rebind.test": "10.99.0.10", // an allowed name pointing at a private address
  "host.test": "198.51.100.1",
};

function say(host, port, name) {
  return new Promise((resolve) => {
    net.createServer((c) => c.end(name + "\n")).listen(port, host, resolve);
  });
}

function holding(host, port, peakFile) {
  let open = 0, peak = 0;
  return new Promise((resolve) => {
    net.createServer((c) => {
      open++;
      if (open > peak) {
        peak = open;
        fs.writeFileSync(peakFile, String(peak));
      }
      c.on("error", () => {});
      c.on("close", () => open--);
      c.write("flood\n");
    }).listen({ port, host, backlog: 2048 }, resolve);
  });
}

// A minimal DNS server: A records from RECORDS, NXDOMAIN for other names,
// empty answers for other types.
function dns(host, port) {
  const s = dgram.createSocket("udp4");
  s.on("message", (q, from) => {
    try {
      let off = 12;
      const labels = [];
      while (q[off] !== 0) {
        labels.push(q.subarray(off + 1, off + 1 + q[off]).toString());
        off += q[off] + 1;
      }
      const qEnd = off + 5;
      const qtype = q.readUInt16BE(off + 1);
      const name = labels.join(".").toLowerCase();
      const ip = RECORDS[name];
      const head = Buffer.from(q.subarray(0, 12));
      head.writeUInt16BE(0x8180 | (ip ? 0 : 3), 2); // response, RD, RA; NXDOMAIN for unknown names
      head.writeUInt16BE(1, 4);
      const answer = ip && qtype === 1;
      head.writeUInt16BE(answer ? 1 : 0, 6);
      head.writeUInt32BE(0, 8);
      const parts = [head, q.subarray(12, qEnd)];
      if (answer) {
        const rr = Buffer.alloc(16);
        rr.writeUInt16BE(0xc00c, 0); // the question's name
        rr.writeUInt16BE(1, 2);
        rr.writeUInt16BE(1, 4);
        rr.writeUInt32BE(60, 6);
        rr.writeUInt16BE(4, 10);
        ip.split(".").forEach((b, i) => rr.writeUInt8(Number(b), 12 + i));
        parts.push(rr);
      }
      s.send(Buffer.concat(parts), from.port, from.address);
    } catch {}
  });
  return new Promise((resolve) => s.bind(port, host, resolve));
}

const [role, arg] = process.argv.slice(2);
if (role === "inet") {
  await Promise.all([
    say("192.0.2.10", 80, "public"),
    say("203.0.113.10", 80, "other"),
    say("10.99.0.10", 80, "private"),
    holding("192.0.2.10", 81, arg),
    dns("192.0.2.53", 53),
  ]);
} else if (role === "host") {
  await say("0.0.0.0", Number(arg), "host");
} else {
  console.error("usage: netlab-servers.mjs inet PEAKFILE | host PORT");
  process.exit(2);
}
console.log("ready");
