"""MediaPipe/TFLite native log lines stay off the terminal; everything else still reaches it.

Each case runs a real Python process that turns the filter on, then writes to fd 2 the way the
native code does (the lines are copied from a real `emokit label` run) and the way Python does.
The end-to-end check on a real `emokit label` run is in test_crop_label.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

ABSL_W = (
    b"W0000 00:00:1796190574.202073    7043 inference_feedback_manager.cc:114] Feedback manager "
    b"requires a model with a single signature inference. Disabling support for feedback tensors.\n"
)
ABSL_E = b"E0000 00:00:1796190574.202073    7043 calculator_graph.cc:887] a real native error\n"
PREAMBLE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"

PRELUDE = """
import os, sys, time, logging
from emokit.native_logs import filter_native_logs
assert filter_native_logs()
def w(b, pause=0.0):
    os.write(2, b)
    time.sleep(pause)
"""


def _run(body: str, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "EMOKIT_NATIVE_LOGS"}
    kw.setdefault("capture_output", True)
    code = PRELUDE + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], env=env, timeout=60, **kw)


def test_native_records_are_dropped_and_the_rest_is_kept() -> None:
    r = _run(
        f"""
        w({ABSL_W!r}); w({PREAMBLE!r})
        # a progress bar, then TFLite's line in three writes (as TFLite's logger does), slowly
        w(b"\\rlabel:   0%|          | 0/2", 0.2)
        w(b"INFO: ", 0.2); w(b"Created TensorFlow Lite XNNPACK delegate for CPU.", 0.2); w(b"\\n")
        w({ABSL_E!r})
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("emokit.x").warning("a python warning")
        raise ValueError("boom")
        """
    )
    err = r.stderr
    assert r.returncode == 1
    assert b"inference_feedback_manager" not in err and b"absl::InitializeLog" not in err
    assert b"TensorFlow Lite" not in err and b"INFO:" not in err
    # kept: the progress bar (without the glued-on native line), native errors, Python output
    assert err.startswith(b"\rlabel:   0%|          | 0/2" + ABSL_E)
    assert b"WARNING emokit.x: a python warning\n" in err
    assert b"Traceback (most recent call last)" in err and err.rstrip().endswith(b"ValueError: boom")


def test_a_header_cut_off_from_its_message_by_another_process_is_still_dropped() -> None:
    """Two label workers under load (seen in CI): one writes TFLite's ``INFO: ``, another its absl
    record or the parent a progress bar, then the first one's message and newline arrive."""
    msg = b"Created TensorFlow Lite XNNPACK delegate for CPU."
    r = _run(
        f"""
        w(b"\\rlabel:   0%|", 0.2)
        w(b"INFO: ", 0.2); w({ABSL_W!r}, 0.2); w({msg!r}, 0.2); w(b"\\n", 0.2)
        w(b"INFO: ", 0.2); w(b"\\rlabel:  50%|", 0.2); w({msg!r}, 0.2); w(b"\\n", 0.2)
        w(b"done\\n")
        """
    )
    assert r.returncode == 0
    assert r.stderr == b"\rlabel:   0%|\rlabel:  50%|done\n", r.stderr


def test_what_a_crashing_process_wrote_still_arrives() -> None:
    r = _run(f"w({ABSL_W!r}); w(b'last words before the crash\\n'); os.abort()")
    assert r.returncode == -6
    assert r.stderr == b"last words before the crash\n"


def test_child_processes_are_filtered_too() -> None:
    child = f"import os; os.write(2, {ABSL_W!r} + b'from the child\\n')"
    r = _run(f"import subprocess; subprocess.run([sys.executable, '-c', {child!r}], check=True)")
    assert r.returncode == 0 and r.stderr == b"from the child\n"


def test_a_terminal_stays_a_terminal() -> None:
    """Progress bars and colours decide by isatty(): on a terminal, the filter is a terminal too."""
    import pty

    master, slave = pty.openpty()
    try:
        body = f"print(sys.stderr.isatty(), flush=True); w({ABSL_W!r} + b'on the terminal\\n')"
        r = _run(body, capture_output=False, stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every writer has gone
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
    assert r.returncode == 0 and r.stdout == b"True\n"
    assert b"on the terminal" in out and b"inference_feedback_manager" not in out


def test_switch_off_with_env_var() -> None:
    code = "from emokit.native_logs import filter_native_logs; import os; print(filter_native_logs())"
    r = subprocess.run(
        [sys.executable, "-c", code + f"; os.write(2, {ABSL_W!r})"],
        capture_output=True,
        env={**os.environ, "EMOKIT_NATIVE_LOGS": "1"},
        timeout=60,
    )
    assert r.stdout == b"False\n" and r.stderr == ABSL_W


def test_exit_does_not_wait_for_a_child_that_still_holds_stderr() -> None:
    """A child that outlives the parent (multiprocessing's resource tracker does) keeps the pipe
    open; the parent exits once the filter has forwarded its own output, and the child's later
    lines are still filtered and forwarded."""
    child = f"import os, time; time.sleep(1.0); os.write(2, {ABSL_W!r} + b'child after the parent\\n')"
    r = _run(
        f"""
        import subprocess
        from emokit import native_logs
        subprocess.Popen([sys.executable, '-c', {child!r}])
        w({ABSL_W!r} + b'parent: last line')
        print("confirmed", native_logs._restore(), flush=True)
        """
    )
    assert r.returncode == 0
    assert r.stdout == b"confirmed True\n"
    assert r.stderr == b"parent: last linechild after the parent\n"
