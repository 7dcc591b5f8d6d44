#!/usr/bin/env python3
"""kvmux-cli's prompt on a real terminal: kvmux-cli runs in a pseudo-
terminal (os.openpty) against a real kvmuxd on an ephemeral
port, and the test types at it as a person would.

Checked: libedit drives the prompt (the Up arrow recalls the last line
and is never sent to the server as a key), Tab completes "se" to "set",
typing "set " shows the argument hint, "help get" prints the synopsis
and the description, an unprintable value is shown quoted, and history
is saved to $HOME/.kvmux_cli_history.

usage: cli_pty_test.py KVMUXD KVMUX_CLI
Every wait is bounded; processes started here are stopped by pid."""
import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time

failures = 0
passes = 0


def check(cond, what, out=None):
    global failures, passes
    if cond:
        passes += 1
        return
    failures += 1
    print("CHECK failed: " + what, file=sys.stderr)
    if out is not None:
        print("--- terminal output so far:\n%r\n---" % out, file=sys.stderr)


def start_server(kvmuxd):
    p = subprocess.Popen([kvmuxd, "--bind", "127.0.0.1", "--port", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30  # ASan starts slowly on a loaded CI
    buf = b""
    while time.monotonic() < deadline:
        r, _, _ = select.select([p.stdout], [], [], 0.5)
        if r:
            chunk = os.read(p.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            m = re.search(rb"listening on [0-9.]+:([0-9]+)", buf)
            if m:
                return p, int(m.group(1))
    p.kill()
    p.wait()
    sys.exit("FAIL: kvmuxd did not print its port: %r" % buf)


class Term:
    """kvmux-cli on the slave side of a pty; we hold the master, and keep a
    descriptor of the slave to see its terminal modes."""

    def __init__(self, cli, port, home, prompt):
        env = dict(os.environ, TERM="xterm", HOME=home)
        env.pop("EDITRC", None)
        self.fd, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.setsid()
                fcntl.ioctl(self.slave, termios.TIOCSCTTY, 0)
                for i in range(3):
                    os.dup2(self.slave, i)
                os.execve(cli, [cli, "-h", "127.0.0.1", "-p", str(port)], env)
            finally:
                os._exit(127)
        self.prompt = prompt
        self.out = b""

    def send(self, data):
        os.write(self.fd, data)

    def ready(self, start=0, timeout=20.0):
        """Wait for a prompt after offset start, then for libedit to put
        the terminal in raw mode: it prints the prompt first, and a key
        sent before the switch would be cooked by the kernel (Ctrl-D taken
        as end of file, for one). Returns True when ready."""
        if not self.read_until(self.prompt, timeout, start):
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not termios.tcgetattr(self.slave)[3] & termios.ICANON:
                return True
            self.read_until(b"\x00never", timeout=0.01)
        return False

    def read_until(self, needle, timeout=20.0, start=0):
        """Read until needle (bytes) appears in the output after offset
        start; returns True if it did before the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if needle in self.out[start:]:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            r, _, _ = select.select([self.fd], [], [], min(left, 0.2))
            if r:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # EIO: no process has the terminal open
                    return False
                if not chunk:
                    return False
                self.out += chunk

    def finish(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        code = None
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                code = os.waitstatus_to_exitcode(status)
                break
            self.read_until(b"\x00never", timeout=0.1)
        else:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)
        os.close(self.slave)
        return code


def cli_run(cli, port, *args, stdin=None):
    return subprocess.run([cli, "-h", "127.0.0.1", "-p", str(port)] + list(args),
                          input=stdin, capture_output=True, timeout=60)


def main():
    kvmuxd, cli = sys.argv[1], sys.argv[2]
    server, port = start_server(kvmuxd)
    home = tempfile.mkdtemp(prefix="kvmux_cli_pty_")
    try:
        run(cli, port, home)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    print("cli_pty_test: %d passed, %d failed" % (passes, failures))
    return 1 if failures or not passes else 0


def run(cli, port, home):
    # An unprintable value, stored through a pipe with -x (binary safe).
    r = cli_run(cli, port, "-x", "set", "bin", stdin=b"a\x00\xff")
    check(r.returncode == 0, "set bin via -x: %r" % (r.stderr,))

    prompt = b"kvmux 127.0.0.1:%d> " % port
    t = Term(cli, port, home, prompt)
    check(t.ready(), "first prompt", t.out)

    def step(keys, expect, what):
        """Type keys once the prompt is ready; expect shows up after."""
        mark = len(t.out)
        check(t.ready(mark - len(prompt)), "prompt before " + what, t.out)
        mark = len(t.out)
        t.send(keys)
        check(t.read_until(expect, start=mark), what, t.out)
        return mark

    # A plain command, then Up arrow + Enter runs it again.
    step(b"set hk one\r", b"OK version=", "set hk")
    step(b"get hk\r", b"one\r\n", "get hk")
    mark = step(b"\x1b[A", b"get hk", "Up arrow recalls 'get hk'")
    t.send(b"\r")
    check(t.read_until(b"one\r\n", start=mark), "recalled line runs", t.out)
    step(b"set arrow x\r", b"OK version=", "set arrow")

    # Tab completes "se" to "set " (the only command starting with "se").
    # libedit redraws the line (the cursor moves between the letters), so
    # what shows that "set " is complete is the hint, which needs the
    # space; the key reaching the server (below) shows the line was "set".
    mark = step(b"se\t", b"KEY VALUE [--ttl MS]", "Tab completes se, hint")
    t.send(b"tabkey tabval\r")
    check(t.read_until(b"OK version=", start=mark), "completed set runs", t.out)
    # The hint's dim attribute is reset right after it.
    check(b"KEY VALUE [--ttl MS]\x1b[0m" in t.out[mark:], "hint reset", t.out)

    # help get: synopsis and description.
    mark = step(b"help get\r", b"get [-v] KEY", "help get synopsis")
    check(t.read_until(b"print the value", start=mark), "help get description", t.out)

    # A binary value is quoted on a terminal.
    step(b"get bin\r", b'"a\\x00\\xff"', "binary value quoted")

    # The hint shrinks as arguments are typed.
    mark = step(b"set hint2 ", b"VALUE [--ttl MS]\x1b[0m", "hint after 'set hint2 '")
    t.send(b"v\r")
    check(t.read_until(b"OK version=", start=mark), "set hint2 runs", t.out)

    step(b"quit\r", b"quit", "quit")
    rc = t.finish()
    check(rc == 0, "prompt exits 0 after quit (got %r)" % (rc,), t.out)

    # A new session recalls the saved history: Up three times passes
    # "quit" and "set hint2 v" and reaches "get bin"; Ctrl-D then ends it.
    t = Term(cli, port, home, prompt)
    check(t.ready(), "second session prompt", t.out)
    mark = step(b"\x1b[A\x1b[A\x1b[A", b"get bin", "history from the file")
    t.send(b"\r")
    check(t.read_until(b'"a\\x00\\xff"', start=mark), "recalled get bin runs", t.out)
    mark = len(t.out)
    check(t.ready(mark - len(prompt)), "prompt after recall", t.out)
    t.send(b"\x04")
    rc = t.finish()
    check(rc == 0, "Ctrl-D ends the prompt with 0 (got %r)" % (rc,), t.out)

    # What reached the server: the recalled line was "get hk", and no key
    # made of an escape sequence was ever written or read.
    r = cli_run(cli, port, "scan")
    keys = set(r.stdout.split(b"\n")) - {b""}
    check(keys == {b"bin", b"hk", b"arrow", b"tabkey", b"hint2"}, "keys on the server: %r" % keys)
    check(not any(b"\x1b" in k or b"[A" in k for k in keys), "no escape-sequence key")
    r = cli_run(cli, port, "get", "tabkey")
    check(r.stdout == b"tabval\n", "tabkey's value: %r" % r.stdout)

    # History was saved for the next session.
    try:
        with open(os.path.join(home, ".kvmux_cli_history"), "rb") as f:
            hist = f.read()
    except OSError:
        hist = b""
    hist = hist.replace(b"\\040", b" ")  # libedit's file encodes blanks
    check(b"get hk" in hist and b"help get" in hist, "history file: %r" % hist[:300])


if __name__ == "__main__":
    sys.exit(main())
