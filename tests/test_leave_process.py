"""distributed.leave_process: how a finished torchrun rank ends (os._exit after a normal exit's first steps).

The rank skips only the interpreter's finalization, which gloo's still-running threads could abort
(see its docstring); everything a normal exit does before that must still happen, in the same order.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent("""
    import atexit, sys, threading, time
    from pathlib import Path
    from cohort.distributed import leave_process

    out = Path(sys.argv[1])
    def late_writer():
        time.sleep(0.3)
        out.joinpath("thread").write_text("done")
    def at_exit():
        assert out.joinpath("thread").exists(), "atexit ran before the non-daemon thread ended"
        out.joinpath("atexit").write_text("ran")
    atexit.register(at_exit)
    threading.Thread(target=late_writer).start()
    print("buffered, no newline", end="")  # stdout is a pipe: block-buffered until flushed
    sys.stderr.write("err")
    leave_process(7)
    out.joinpath("after").write_text("leave_process returned")
""")


def test_a_rank_leaves_after_its_threads_atexit_handlers_and_output(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}  # buffered, as torchrun's ranks may be
    done = subprocess.run([sys.executable, "-c", PROGRAM, str(tmp_path)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 7, done.stderr
    assert done.stdout == "buffered, no newline" and done.stderr.endswith("err")
    assert (tmp_path / "thread").read_text() == "done"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert not (tmp_path / "after").exists()
