"""The code reward's sandbox: untrusted programs in throwaway processes, and a verdict they cannot forge.

* :mod:`~cohort.rewards.sandbox.runner`: :class:`Sandbox` runs one program per process under an isolation layer;
* :mod:`~cohort.rewards.sandbox.layers`: the isolation layers (bubblewrap, unshare, setuid, none) and what each guarantees;
* :mod:`~cohort.rewards.sandbox.processes`: one sandboxed OS process, its directory, command line and teardown;
* :mod:`~cohort.rewards.sandbox.harness`: the script both sandboxes of an assertion test run (candidate and judge);
* :mod:`~cohort.rewards.sandbox.verdict`: the host side of an assertion test: a judge sandbox calls the program's.
"""

from cohort.rewards.sandbox.runner import (
    ISOLATIONS,
    ExecutionRequest,
    ExecutionResult,
    IsolationUnavailable,
    Sandbox,
    SandboxLimits,
)

__all__ = ["ISOLATIONS", "ExecutionRequest", "ExecutionResult", "IsolationUnavailable", "Sandbox", "SandboxLimits"]
