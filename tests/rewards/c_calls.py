"""Reward functions that make one long C call or crash in C, for the hard-deadline tests. Worker
processes load them by name (``rewards.c_calls:...``), as they would a user's reward.

PBKDF2 with many rounds is one call into C (OpenSSL): no Python signal handler runs until it
returns, so only killing the process that makes it ends it early. It is CPU work, not a sleep, so
its length does not depend on timing luck: 10**9 rounds take minutes.
"""

from __future__ import annotations

import hashlib
import os
import signal

FOREVER = 10**9  # PBKDF2 rounds: about 9 minutes on this machine's cores


def c_call(rounds: int) -> None:
    hashlib.pbkdf2_hmac("sha256", b"completion", b"salt", rounds)


def stalls_on_stall(prompts, completions, **_):
    """1.0 for each completion; a completion "stall" first holds one C call for minutes."""
    for completion in completions:
        if completion == "stall":
            c_call(FOREVER)
    return [1.0] * len(completions)


def crashes_on_crash(prompts, completions, **_):
    """1.0 for each completion; a completion "crash" kills its process with SIGSEGV, as a bug in C would."""
    if "crash" in completions:
        os.kill(os.getpid(), signal.SIGSEGV)
    return [1.0] * len(completions)


def own_pid(prompts, completions, **_):
    """The process id that scored the completion (to see where a reward runs)."""
    return [float(os.getpid())] * len(completions)
