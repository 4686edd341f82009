# boxlite's Python session driver. The guest agent starts it as
# `python3 -c <this file>` and talks to it over fd 3 (a socket), one JSON
# object per line, as it does with driver.js.
#
# The code runs in IPython's own InteractiveShell: run_cell, the display
# system (display(), _repr_png_, _repr_html_, pandas and numpy reprs), the
# displayhook (the value of the last expression, Out[n]), magics and
# matplotlib's inline backend are IPython's, as in Jupyter. What ipykernel
# adds on top (ZeroMQ sockets, signed Jupyter messages, an IOPub thread that
# every output is handed to) is replaced by this one-socket protocol: a call
# is one line each way, which is what makes a warm call take a fraction of
# a millisecond in here instead of the kernel's several.
#
# agent -> driver: {id, code, cwd?, env?}
# driver -> agent: {t:"ready"} once; then per job any number of
#   {t:"out", n:"stdout"|"stderr", s:<text>},
#   {t:"bundle", kind:"display"|"result", data:{mime: value}} (binary
#   types base64, as in Jupyter), {t:"dropped", mime, size} (a
#   representation too large to send), and last
#   {t:"done", id, count, sync, exit?, error:{name, message, stack}|null}
#   (exit: the driver ends now, as exit() asked).
# Before "done" the driver writes a marker with the job's id to its own fd 1
# and 2 (sync says to which), so the agent can pass on everything child
# processes and native code wrote there before the job ended.
# SIGINT raises KeyboardInterrupt in the running code; between jobs, and
# while a message is being written, it is held back.
import sys
import os

# The directory the code runs in comes first on sys.path (as in ipykernel),
# but not while the driver imports its own modules.
_path0 = sys.path.pop(0) if sys.path and sys.path[0] == "" else None

import base64
import builtins
import json
import signal
import socket
import threading
import time

PID = os.getpid()


def _ident(fd):
    try:
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino)
    except OSError:
        return None


# The agent's pipes: markers go only there (never into a file the code put
# on fd 1 or 2).
PIPES = {1: _ident(1), 2: _ident(2)}
# Every message is one line the agent reads up to 10 MiB: text goes in
# pieces of at most MAX_TEXT characters (4 bytes of UTF-8 or a 6-byte
# escape each), a bundle carries at most MAX_BUNDLE bytes of encoded
# representations (one over MAX_REPR is dropped and reported).
MAX_TEXT = 256 << 10
MAX_REPR = 6 << 20
MAX_BUNDLE = 8 << 20
MAX_ERROR = 16 << 10  # characters of an error's message the agent keeps
MAX_STACK = 64 << 10  # and of its traceback

ctl = socket.socket(fileno=3)
ctl.set_inheritable(False)
_wlock = threading.Lock()
_main = threading.main_thread()


class _State:
    executing = False  # user code may be interrupted
    sending = 0  # the main thread is writing a message
    pending = False  # an interrupt arrived while it was


state = _State()


def _on_sigint(signum, frame):
    if not state.executing:
        return
    if state.sending:
        state.pending = True
        return
    raise KeyboardInterrupt


def _finite(v, depth=0):
    """v with NaN and the infinities as null (as JSON.stringify writes
    them): Go's JSON, like the standard, has no NaN."""
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return None
    if depth > 100:
        return v
    if isinstance(v, dict):
        return {k: _finite(x, depth + 1) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x, depth + 1) for x in v]
    return v


def dumps(v):
    try:
        return json.dumps(v, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(v), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def clip(s, n):
    """s cut to n characters, saying so."""
    return s if len(s) <= n else s[:n] + "\n... (cut at %d characters)" % n


def send(msg):
    if os.getpid() != PID:
        return  # a forked child (multiprocessing): not ours to speak for
    data = (dumps(msg) + "\n").encode("utf-8", "surrogatepass")
    main = threading.current_thread() is _main
    if main:
        state.sending += 1
    try:
        with _wlock:
            ctl.sendall(data)
    finally:
        if main:
            state.sending -= 1
    if main and state.pending and not state.sending and state.executing:
        state.pending = False
        raise KeyboardInterrupt


class Stream:
    """sys.stdout / sys.stderr: text goes to the agent, batched a little."""

    encoding = "utf-8"
    errors = "replace"
    closed = False

    def __init__(self, name, fd):
        self.name = name
        self._fd = fd
        self._buf = []
        self._size = 0
        self._last = 0.0
        self._lock = threading.RLock()

    def writable(self):
        return True

    def readable(self):
        return False

    def seekable(self):
        return False

    def isatty(self):
        return False

    def fileno(self):
        return self._fd

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError("write() argument must be str, not %s" % type(s).__name__)
        if not s:
            return 0
        if os.getpid() != PID:
            # A forked child writes to the process's own stream, which the
            # agent passes on too.
            try:
                os.write(self._fd, s.encode("utf-8", "replace"))
            except OSError:
                pass
            return len(s)
        with self._lock:
            self._buf.append(s)
            self._size += len(s)
            now = time.monotonic()
            soon = self._size >= 1 << 16 or (("\n" in s or "\r" in s) and now - self._last >= 0.02)
        if soon:
            self.flush()
        else:
            flusher.kick()
        return len(s)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        if os.getpid() != PID:
            return
        with self._lock:
            if not self._buf:
                return
            s = "".join(self._buf)
            self._buf, self._size, self._last = [], 0, time.monotonic()
            for i in range(0, len(s), MAX_TEXT):
                send({"t": "out", "n": self.name, "s": s[i : i + MAX_TEXT]})

    def close(self):
        pass


class Flusher(threading.Thread):
    """Sends what was written without a line end, or right after another
    line, within 50 ms; idle (and costing nothing) while there is none."""

    def __init__(self):
        super().__init__(name="boxlite-flush", daemon=True)
        self.ev = threading.Event()

    def kick(self):
        if not self.ev.is_set():
            self.ev.set()

    def run(self):
        while True:
            self.ev.wait()
            time.sleep(0.05)
            self.ev.clear()
            for s in (sys_stdout, sys_stderr):
                try:
                    s.flush()
                except Exception:
                    pass


sys_stdout = Stream("stdout", 1)
sys_stderr = Stream("stderr", 2)
flusher = Flusher()


def flush_streams():
    sys_stdout.flush()
    sys_stderr.flush()


def encode_bundle(data):
    """A mime bundle as Jupyter sends it: bytes as base64, text as str,
    JSON values as they are; representations too large to send are
    reported instead. text/plain is kept first (it is what a result is)."""
    out = {}
    total = 0
    items = sorted((data or {}).items(), key=lambda kv: kv[0] != "text/plain")
    for mime, v in items:
        mime = str(mime)
        # size: the bytes the entry adds to the line, "mime":value, exactly
        # or (short strings) at most.
        if isinstance(v, (bytes, bytearray, memoryview)):
            v = base64.b64encode(bytes(v)).decode("ascii")
            size = len(v) + 2
        elif isinstance(v, str):
            # Encoded, a character takes up to 6 bytes (an escape).
            size = len(v) * 6 + 2 if len(v) <= 4096 else len(dumps(v).encode("utf-8", "surrogatepass"))
        else:
            try:
                enc = dumps(v)
                v = _finite(v)
            except (TypeError, ValueError, RecursionError):
                v = str(v)
                enc = dumps(v)
            size = len(enc.encode("utf-8", "surrogatepass"))
        size += len(dumps(mime).encode("utf-8", "surrogatepass")) + 2  # the colon, the comma
        if size > MAX_REPR or total + size > MAX_BUNDLE:
            send({"t": "dropped", "mime": clip(mime, 255), "size": size})
            continue
        total += size
        out[mime] = v
    return out


def error_info(name, evalue, stack):
    """An error as the agent takes it, each text cut to what it keeps (the
    whole message must fit one line the agent reads)."""
    try:
        message = str(evalue)
    except Exception:
        message = "<exception str() failed>"
    return {"name": clip(str(name), 1024), "message": clip(message, MAX_ERROR), "stack": clip(str(stack), MAX_STACK)}


def main():
    signal.signal(signal.SIGINT, _on_sigint)
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # As ipykernel: no pager can work here.
    os.environ["PAGER"] = "cat"
    os.environ["GIT_PAGER"] = "cat"
    sys.stdout, sys.stderr = sys_stdout, sys_stderr
    flusher.start()

    from traitlets.config import Config
    from IPython.core.displayhook import DisplayHook
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.error import StdinNotImplementedError
    from IPython.core.interactiveshell import InteractiveShell

    class Publisher(DisplayPublisher):
        def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs):
            flush_streams()
            send({"t": "bundle", "kind": "display", "data": encode_bundle(data)})

        def clear_output(self, wait=False):
            flush_streams()

    class Hook(DisplayHook):
        def start_displayhook(self):
            self._data = None

        def write_output_prompt(self):
            pass

        def write_format_data(self, format_dict, md_dict=None):
            self._data = format_dict

        def finish_displayhook(self):
            flush_streams()
            if self._data:
                send({"t": "bundle", "kind": "result", "data": encode_bundle(self._data)})
            self._data = None

    class Shell(InteractiveShell):
        error = None

        def ask_exit(self):
            # exit() / quit(): the interpreter ends after this call, as a
            # kernel does (Jupyter then starts a new one); so does this
            # session, on its next call.
            self.exit_now = True

        def _showtraceback(self, etype, evalue, stb):
            flush_streams()
            self.error = error_info(str(getattr(etype, "__name__", etype)), evalue, "\n".join(stb) if isinstance(stb, list) else stb)

    def no_input(prompt=""):
        raise StdinNotImplementedError("raw_input was called, but this frontend does not support input requests.")

    cfg = Config()
    cfg.InteractiveShell.colors = "NoColor"
    cfg.HistoryManager.hist_file = ":memory:"
    shell = Shell.instance(config=cfg, displayhook_class=Hook, display_pub_class=Publisher)
    builtins.input = no_input
    try:
        import getpass

        getpass.getpass = no_input
    except Exception:
        pass
    if _path0 is not None:
        sys.path.insert(0, _path0)

    rfile = ctl.makefile("rb")
    send({"t": "ready", "python": sys.version.split()[0]})
    while True:
        line = rfile.readline()
        if not line:
            return
        job = json.loads(line)
        shell.error = None
        try:
            if job.get("cwd"):
                os.chdir(job["cwd"])
            if job.get("env"):
                os.environ.update(job["env"])
        except Exception as e:
            shell.error = error_info(type(e).__name__, e, "")
        else:
            try:
                state.executing = True
                try:
                    shell.run_cell(job["code"], store_history=True)
                finally:
                    state.executing = False
            except KeyboardInterrupt:
                # Between the code's end and the flag's reset.
                if shell.error is None:
                    shell.error = {"name": "KeyboardInterrupt", "message": "", "stack": "KeyboardInterrupt"}
            state.pending = False
        flush_streams()
        marker = ("\0boxlite-sync %d\0" % job["id"]).encode()
        sync = 0
        for bit, fd in ((1, 1), (2, 2)):
            if PIPES[fd] is None or _ident(fd) != PIPES[fd]:
                continue
            try:
                if os.write(fd, marker) == len(marker):
                    sync |= bit
            except OSError:
                pass
        done = {"t": "done", "id": job["id"], "count": shell.execution_count - 1, "sync": sync, "error": shell.error}
        if shell.exit_now:
            done["exit"] = True
        send(done)
        if shell.exit_now:
            os._exit(0)


try:
    main()
except BaseException:
    # Before "ready" no call hears the driver's own streams: what failed
    # (IPython missing, say) goes to the process's stderr, which the agent
    # keeps for its report.
    import traceback

    os.write(2, traceback.format_exc().encode("utf-8", "replace"))
    os._exit(1)
