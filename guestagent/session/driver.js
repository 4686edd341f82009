'use strict';
// boxlite's JavaScript session driver. The guest agent starts it as
// `node --expose-internals -e <this file>` and talks to it over fd 3, one
// JSON object per line. Code runs in Node's own global scope, one job at a
// time, so its globals, functions and (rewritten) top-level let, const and
// class bindings persist between jobs, as in Node's REPL.
//
// agent -> driver: {id, code, cwd?, env?}
// driver -> agent: {t:"ready"} once; then per job any number of
//   {t:"out", n:"stdout"|"stderr", b:<base64>} and {t:"display", mime, b:<base64>},
//   and last {t:"done", id, sync, value:<string>|null, error:{name, message, stack}|null}.
// Before "done" the driver writes a marker with the job's id to its own fd 1
// and 2 (sync says to which), so the agent can pass on everything child
// processes wrote there before the job ended (see driver.py).
// SIGINT interrupts the job (breakOnSigint while the code runs
// synchronously, a rejected wait while it awaits); the session lives on.

const vm = require('vm');
const fs = require('fs');
const util = require('util');
const net = require('net');
const path = require('path');
const Module = require('module');

let processTopLevelAwait = null;
try { processTopLevelAwait = require('internal/repl/await').processTopLevelAwait; } catch (e) { /* older or stripped node */ }
// acorn: from the global module paths, else the one Node itself uses (in
// Debian the system's), else where Debian puts it; without it no
// declaration rewriting.
let acorn = null;
for (const name of ['acorn', 'internal/deps/acorn/acorn/dist/acorn', '/usr/share/nodejs/acorn']) {
  try { acorn = require(name); break; } catch (e) { /* next */ }
}

const ctl = new net.Socket({ fd: 3, readable: true, writable: true });
const send = (m) => ctl.write(JSON.stringify(m) + '\n');

// Every message is one line the agent reads up to 10 MiB: stream bytes go
// in pieces of MAX_PIECE, a display of more than MAX_REPR bytes is dropped
// and reported, and texts are cut (a UTF-16 unit encodes to at most 6
// bytes of JSON).
const MAX_PIECE = 1 << 20;
const MAX_REPR = 6 << 20;
const clip = (s, n) => (s.length <= n ? s : s.slice(0, n) + '\n... (cut at ' + n + ' characters)');
const MAX_VALUE = 256 << 10; // characters: what a result shows at most
const MAX_ERROR = 16 << 10;
const MAX_STACK = 64 << 10;
ctl.on('error', () => process.exit(0));
ctl.on('end', () => process.exit(0));

// What the code writes to process.stdout/stderr (console.log included)
// goes to the agent in order with the job's other messages.
for (const [stream, name] of [[process.stdout, 'stdout'], [process.stderr, 'stderr']]) {
  stream.write = function (chunk, encoding, cb) {
    if (typeof encoding === 'function') { cb = encoding; encoding = undefined; }
    const b = typeof chunk === 'string' ? Buffer.from(chunk, encoding || 'utf8') : Buffer.from(chunk);
    for (let i = 0; i < b.length; i += MAX_PIECE) send({ t: 'out', n: name, b: b.subarray(i, i + MAX_PIECE).toString('base64') });
    if (typeof cb === 'function') process.nextTick(cb);
    return true;
  };
}

function sniff(b) {
  if (b.length > 8 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) return 'image/png';
  if (b.length > 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'image/jpeg';
  return null;
}

// display(value[, mime]) shows a rich output: a Buffer of PNG or JPEG bytes
// as an image, a string as the given mime type, anything else as text.
globalThis.display = function display(value, mime) {
  let b;
  if (value instanceof Uint8Array) {
    b = Buffer.from(value);
    mime = mime || sniff(b) || 'application/octet-stream';
  } else if (typeof value === 'string' && mime) {
    b = Buffer.from(value, 'utf8');
  } else {
    b = Buffer.from(util.inspect(value), 'utf8');
    mime = 'text/plain';
  }
  mime = clip(String(mime), 255);
  if (b.length > MAX_REPR) {
    send({ t: 'dropped', mime, size: b.length });
    return;
  }
  send({ t: 'display', mime, b: b.toString('base64') });
};
globalThis.require = Module.createRequire(path.join(process.cwd(), '[session]'));

// rewrite turns top-level let, const and class declarations into var (so a
// job may declare again what an earlier one did, and the bindings persist
// as globals) and says whether the last statement is an expression.
function rewrite(code) {
  if (!acorn) return { code, hasValue: null };
  let ast;
  try {
    ast = acorn.parse(code, { ecmaVersion: 'latest', sourceType: 'script', allowAwaitOutsideFunction: true, allowHashBang: true });
  } catch (e) {
    return { code, hasValue: null }; // V8 reports the syntax error
  }
  const edits = [];
  for (const st of ast.body) {
    if (st.type === 'VariableDeclaration' && (st.kind === 'let' || st.kind === 'const')) {
      edits.push([st.start, st.start + st.kind.length, 'var']);
    } else if (st.type === 'ClassDeclaration' && st.id) {
      edits.push([st.end, st.end, ';']);
      edits.push([st.start, st.start, 'var ' + st.id.name + ' = ']);
    }
  }
  edits.sort((a, b) => b[0] - a[0]);
  let out = code;
  for (const [s, e, text] of edits) out = out.slice(0, s) + text + out.slice(e);
  const last = ast.body[ast.body.length - 1];
  return { code: out, hasValue: !!last && last.type === 'ExpressionStatement' };
}

let interruptWait = null;
process.on('SIGINT', () => { if (interruptWait) interruptWait(); });
// Errors of code still running after its job ended are shown, not fatal.
process.on('uncaughtException', (e) => process.stderr.write('Uncaught ' + ((e && e.stack) || util.inspect(e)) + '\n'));
process.on('unhandledRejection', (e) => process.stderr.write('Unhandled rejection: ' + ((e && e.stack) || util.inspect(e)) + '\n'));

function interrupted() {
  const e = new Error('Script execution interrupted.');
  e.name = 'Interrupted';
  return e;
}

function errorInfo(e) {
  if (e && e.code === 'ERR_SCRIPT_EXECUTION_INTERRUPTED') e = interrupted();
  let info;
  try {
    if (e instanceof Error || (e && typeof e === 'object' && 'message' in e && 'stack' in e)) {
      info = { name: String(e.name || 'Error'), message: String(e.message), stack: String(e.stack || '') };
    } else {
      info = { name: 'Uncaught', message: util.inspect(e), stack: '' };
    }
  } catch (err) {
    info = { name: 'Uncaught', message: '<the thrown value cannot be shown>', stack: '' };
  }
  return { name: clip(info.name, 1024), message: clip(info.message, MAX_ERROR), stack: clip(info.stack, MAX_STACK) };
}

// The agent's pipes: markers go only there (never into a file the code put
// on fd 1 or 2).
const ident = (fd) => { try { const st = fs.fstatSync(fd); return st.dev + ':' + st.ino; } catch (e) { return null; } };
const pipes = { 1: ident(1), 2: ident(2) };

function syncMarks(id) {
  const mark = Buffer.from('\0boxlite-sync ' + id + '\0');
  let sync = 0;
  for (const [bit, fd] of [[1, 1], [2, 2]]) {
    if (pipes[fd] === null || ident(fd) !== pipes[fd]) continue;
    try { if (fs.writeSync(fd, mark) === mark.length) sync |= bit; } catch (e) { /* closed, or full */ }
  }
  return sync;
}

let cell = 0;
async function runJob(job) {
  let value;
  let error = null;
  let hasValue = true;
  try {
    if (job.cwd) process.chdir(job.cwd);
    if (job.env) Object.assign(process.env, job.env);
    const rw = rewrite(job.code);
    let src = rw.code;
    let wrapped = null;
    if (processTopLevelAwait) {
      try { wrapped = processTopLevelAwait(src); } catch (e) { wrapped = null; }
    }
    if (wrapped !== null) src = wrapped;
    if (rw.hasValue === false) hasValue = false;
    cell++;
    const script = new vm.Script(src, { filename: 'cell' + cell + '.js' });
    value = script.runInThisContext({ breakOnSigint: true, displayErrors: false });
    if (wrapped !== null) {
      const r = await new Promise((resolve, reject) => {
        interruptWait = () => reject(interrupted());
        Promise.resolve(value).then(resolve, reject);
      });
      value = r && typeof r === 'object' && 'value' in r ? r.value : undefined;
    }
  } catch (e) {
    error = errorInfo(e);
  } finally {
    interruptWait = null;
  }
  let text = null;
  if (!error && hasValue && value !== undefined) {
    try { text = util.inspect(value, { colors: false }); } catch (e) { try { text = String(value); } catch (e2) { text = '<the value cannot be shown>'; } }
    text = clip(text, MAX_VALUE);
  }
  send({ t: 'done', id: job.id, sync: syncMarks(job.id), value: text, error });
}

let buf = '';
let queue = Promise.resolve();
ctl.setEncoding('utf8');
ctl.on('data', (d) => {
  buf += d;
  let i;
  while ((i = buf.indexOf('\n')) >= 0) {
    const line = buf.slice(0, i);
    buf = buf.slice(i + 1);
    if (!line) continue;
    const job = JSON.parse(line);
    queue = queue.then(() => runJob(job));
  }
});
send({ t: 'ready', node: process.version, acorn: !!acorn, tla: !!processTopLevelAwait });
