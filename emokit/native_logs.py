"""Keep MediaPipe/TFLite native log lines off the terminal, and everything else on it.

Where they come from: MediaPipe's C++ graphs log through absl (``W0000 00:00:1796190574.202073
7043 inference_feedback_manager.cc:114] ...``, one per graph start, plus ``WARNING: All log messages
before absl::InitializeLog() is called are written to STDERR``), and TFLite prints ``INFO: Created
TensorFlow Lite XNNPACK delegate for CPU.`` itself. absl writes to stderr until
``absl::InitializeLog()``, which the Python bindings never call, and no environment variable sets its
level (``GLOG_minloglevel`` reaches only the older glog, ``TF_CPP_MIN_LOG_LEVEL`` only TensorFlow),
so Python cannot switch them off. They are written straight to file descriptor 2 from the parent and
from every worker process: ~60 lines for a five-video `emokit label`, 7–20 with ``-q``.

:func:`filter_native_logs` points fd 2 at a pipe (a pseudo-terminal when stderr is a terminal, so
progress bars and colours still see one) read by a small forked process that copies everything to
the real stderr except native INFO and WARNING records. Worker processes inherit fd 2, so their
lines pass the same filter. Native ERROR/FATAL records, Python tracebacks and emokit's own log
lines go through untouched, and because the filter is its own process it still forwards what a
process wrote just before it crashed. ``EMOKIT_NATIVE_LOGS=1`` leaves stderr alone.
"""

from __future__ import annotations

import atexit
import os
import re
import select
import signal
import sys
import time

# absl/glog record header: level, MMDD, time (epoch seconds before InitializeLog), thread, file:line].
_RECORD = re.compile(rb"[IW]\d{4} [\d:.]{8,} +\d+ [\w./+-]+:\d+\] [^\n]*\n?")
_ABSL_PREAMBLE = re.compile(rb"WARNING: All log messages before absl::InitializeLog\(\) [^\n]*\n?")
_TFLITE_INFO = re.compile(rb"INFO: (?:Created|Initialized|Replacing) [^\n]*?TensorFlow Lite[^\n]*\n?")
_PATTERNS = (_RECORD, _ABSL_PREAMBLE, _TFLITE_INFO)
_START = re.compile(rb"INFO: |WARNING: |[IW]\d{4} ")
# TFLite's header already written while another process's line (a record, a progress bar's \r)
# got in before its message: it belongs in front of the message that is still to come
_DANGLING = re.compile(rb"(?:INFO|WARNING): (?=\r|INFO: |WARNING: |[IW]\d{4} )")
FLUSH_S = 0.05  # a partial line (a progress bar) waits this long for the rest
HOLD_S = 1.0  # what may be the start of a native record waits at most this long for its end

_state: dict[str, int] = {}


def strip_native_logs(text: bytes) -> bytes:
    """``text`` without MediaPipe/absl INFO/WARNING records and TFLite's INFO lines."""
    for pattern in _PATTERNS:
        text = pattern.sub(b"", text)
    return text


def filter_native_logs() -> bool:
    """Filter this process's (and its future children's) fd 2, once. Returns whether it is on.

    Does nothing where ``sys.stderr`` is not the process's own stderr (pytest capture, typer's
    test runner), without ``fork`` (Windows), or with ``EMOKIT_NATIVE_LOGS=1``.
    """
    if _state:
        return True
    if os.environ.get("EMOKIT_NATIVE_LOGS") == "1" or not hasattr(os, "fork"):
        return False
    if sys.stderr is not sys.__stderr__:
        return False
    stderr = sys.stderr
    if stderr is None:
        return False
    try:
        if stderr.fileno() != 2:
            return False
    except (OSError, ValueError):
        return False
    stderr.flush()
    real = os.dup(2)
    read_fd, write_fd = _channel(real)
    ack_r, ack_w = os.pipe()  # not inherited by spawned workers (os.pipe fds are non-inheritable)
    try:
        pid = os.fork()
    except OSError:  # no process to spare: leave stderr as it is
        for fd in (read_fd, write_fd, real, ack_r, ack_w):
            os.close(fd)
        return False
    if pid == 0:  # the filter: copy read_fd to the real stderr until every writer is gone
        try:
            os.close(write_fd)
            os.close(ack_r)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
                signal.signal(sig, signal.SIG_IGN)  # Ctrl-C: keep forwarding the parent's last words
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            _pump(read_fd, real, _marker(os.getppid()), ack_w)
        finally:
            os._exit(0)
    os.close(read_fd)
    os.close(ack_w)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    _state.update(real=real, pid=pid, ack=ack_r)
    atexit.register(_restore)
    return True


def _channel(real: int) -> tuple[int, int]:
    """(read end, write end): a raw pseudo-terminal with the real one's size when fd 2 is a tty."""
    if not os.isatty(real):
        return os.pipe()
    import fcntl
    import pty
    import termios
    import tty

    master, slave = pty.openpty()
    tty.setraw(slave)  # no newline translation: the real terminal does its own
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, fcntl.ioctl(real, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        pass
    return master, slave


def _marker(pid: int) -> bytes:
    """What the process ``pid`` writes last to its filter, at exit (NUL bytes: never in text)."""
    return b"\0emokit-native-logs-%d-done\0" % pid


def _pump(read_fd: int, out_fd: int, marker: bytes = b"", ack: int | None = None) -> None:
    """Copy ``read_fd`` to ``out_fd`` without native records until every writer has closed it.

    On ``marker`` (the parent's last write, see _restore) everything before it is forwarded and one
    byte is written to ``ack``: the parent exits then, not when the pipe's last writer does (the
    multiprocessing resource tracker holds fd 2 until after the parent has gone; waiting for it
    added ~2 s to every `emokit label`). Later writes from lingering children still pass."""
    buf = b""
    held_since: float | None = None
    alive = True
    while True:
        ready, _, _ = select.select([read_fd], [], [], FLUSH_S if buf else None)
        if ready:
            try:
                chunk = os.read(read_fd, 1 << 16)
            except OSError:  # a pseudo-terminal reports EIO once every writer has closed
                chunk = b""
            if not chunk:
                break
            buf = _defer_dangling(buf + chunk)
            if ack is not None and marker in buf:
                head, buf = buf.split(marker, 1)
                alive = _write(out_fd, strip_native_logs(head), alive)
                try:
                    os.write(ack, b".")
                    os.close(ack)
                except OSError:  # the parent stopped waiting
                    pass
                ack, held_since = None, None
        cut = max(buf.rfind(b"\n"), buf.rfind(b"\r")) + 1  # records never hold a \r
        if cut:
            alive = _write(out_fd, strip_native_logs(buf[:cut]), alive)
            buf, held_since = buf[cut:], None
        if buf and not ready:  # quiet for a moment: send the partial line (a progress bar)...
            now = time.monotonic()
            held_since = now if held_since is None else held_since
            # ...but not what may be the start of a native record (TFLite writes "INFO: ", the
            # message and the newline separately), unless it has waited HOLD_S for its end
            # (a full header, "INFO: " included, waits for its newline: under load TFLite's parts
            # can arrive further apart than HOLD_S, and the header alone would slip through)
            start = _native_start(buf)
            if now - held_since > HOLD_S and not _START.match(buf, start):
                start = len(buf)
            alive = _write(out_fd, strip_native_logs(buf[:start]), alive)
            buf = buf[start:]
            if not buf:
                held_since = None
    _write(out_fd, strip_native_logs(buf), alive)


def _defer_dangling(buf: bytes) -> bytes:
    """``buf`` with each header whose message has not come yet moved to its end (seen under load:
    one worker's ``INFO: ``, then another's absl record, then the first one's message)."""
    headers = _DANGLING.findall(buf)
    return _DANGLING.sub(b"", buf) + b"".join(headers) if headers else buf


def _native_start(tail: bytes) -> int:
    """Where a native record may start in a partial line (its length if nowhere)."""
    m = _START.search(tail)
    if m:
        return m.start()
    for k in range(min(len(tail), 9), 0, -1):  # the line ends in the first bytes of a header
        end = tail[-k:]
        if any(h.startswith(end) for h in (b"INFO: ", b"WARNING: ")) or re.fullmatch(rb"[IW]\d{0,4}", end):
            return len(tail) - k
    return len(tail)


def _write(fd: int, data: bytes, alive: bool) -> bool:
    """Write all of ``data``; once the real stderr is gone, keep draining without writing."""
    while alive and data:
        try:
            data = data[os.write(fd, data) :]
        except InterruptedError:
            continue
        except OSError:
            return False
    return alive


def _restore() -> bool:
    """At exit: give fd 2 back once the filter has forwarded what is left (before the shell
    prompt). Returns whether the filter confirmed it (False: it was gone, or 2 s passed)."""
    real, pid, ack = _state.pop("real", None), _state.pop("pid", None), _state.pop("ack", None)
    if real is None or pid is None or ack is None:
        return False
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    try:
        os.write(2, _marker(os.getpid()))
    except OSError:  # the filter is gone (killed): nothing to wait for
        pass
    os.dup2(real, 2)
    os.close(real)
    ready, _, _ = select.select([ack], [], [], 2.0)
    confirmed = bool(ready) and os.read(ack, 1) == b"."
    os.close(ack)
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it has finished; else it ends with its last writer
    except ChildProcessError:
        pass
    return confirmed
