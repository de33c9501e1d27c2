"""The SIGTERM handler of ``train/preemption.py`` in a process of its own: while a run trains,
a SIGTERM asks for a checkpoint and the process lives on; once the training function has
ended, a SIGTERM (Ray ending the worker actors after a run) ends the process at once, without
the message or the watchdog."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    from adasim_ray.train import preemption
    preemption._install(lambda: os._exit(7))
    if sys.argv[1] == "ended":
        preemption.training_ended()
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.5)
    print("stop requested:", preemption.STOP.is_set(), flush=True)
    sys.exit(0)
""")


def _run(when: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, when], capture_output=True, text=True,
                          timeout=120)


def test_sigterm_while_training_asks_for_a_checkpoint():
    done = _run("training")
    assert done.returncode == 0, done.stderr
    assert "[adasim] SIGTERM: checkpointing at the end of this step" in done.stdout
    assert "stop requested: True" in done.stdout


def test_sigterm_after_training_ends_the_process_at_once():
    done = _run("ended")
    assert done.returncode == -15, (done.stdout, done.stderr)  # the default action: ended
    assert "SIGTERM" not in done.stdout and "stop requested" not in done.stdout
