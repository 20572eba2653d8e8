"""The code reward's sandbox: untrusted programs in throwaway processes, and a verdict they cannot forge.

* :mod:`~cohort.rewards.sandbox.runner`: :class:`Sandbox` runs one program per process under an isolation layer;
* :mod:`~cohort.rewards.sandbox.layers`: the isolation layers (bubblewrap, unshare, setuid, none) and what each guarantees;
* :mod:`~cohort.rewards.sandbox.seccomp`: the kernel calls a sandboxed program may not make (no channel between sandboxes);
* :mod:`~cohort.rewards.sandbox.commands`: the command line that starts a sandboxed interpreter, and its launcher;
* :mod:`~cohort.rewards.sandbox.processes`: one sandboxed OS process, its directory and teardown;
* :mod:`~cohort.rewards.sandbox.codec`: plain data between the two sandboxes of an assertion test;
* :mod:`~cohort.rewards.sandbox.harness`: the script both sandboxes of an assertion test run (candidate and judge);
* :mod:`~cohort.rewards.sandbox.verdict`: the host side of an assertion test: a judge sandbox calls the program's entry point;
* :mod:`~cohort.rewards.sandbox.judges`: judge servers: a judge sandbox started once that forks a fresh judge per program.
"""

from cohort.rewards.sandbox.runner import (
    ISOLATIONS,
    BudgetExceeded,
    ExecutionRequest,
    ExecutionResult,
    IsolationUnavailable,
    Sandbox,
    SandboxLimits,
)

__all__ = ["ISOLATIONS", "BudgetExceeded", "ExecutionRequest", "ExecutionResult", "IsolationUnavailable", "Sandbox", "SandboxLimits"]
