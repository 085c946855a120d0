"""The agent: the stdlib-only half of megarun that runs jobs on a node.

It speaks the spool protocol (docs/spool-protocol.md) and must run unchanged on Python 3.6 and
later with nothing but the standard library: no dataclasses, no `X | None` annotations, no
imports from the rest of megarun.
"""

AGENT_VERSION = "0.1.0"
