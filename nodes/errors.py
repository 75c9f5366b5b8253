"""User-facing node errors: each names the node, the input, the value received and the fix."""

from __future__ import annotations


def node_error(node: str, input_name: str, value: object, problem: str, fix: str) -> ValueError:
    """``ValueError("<node>: input '<input>' got <value>: <problem>. Fix: <fix>")``."""
    shown = value if isinstance(value, (int, float, str, bool, type(None))) else type(value).__name__
    problem = problem.rstrip().rstrip(".")  # core messages end in a full stop; one before "Fix:" is enough
    return ValueError(f"{node}: input '{input_name}' got {shown!r}: {problem}. Fix: {fix}")


def rewrap(node: str, input_name: str, value: object, err: Exception, fix: str) -> ValueError:
    """A core ValueError re-raised with the node and input that caused it."""
    return node_error(node, input_name, value, str(err), fix)
