"""megarun: run test suites and job campaigns on any machine you can SSH to."""

__version__ = "0.1.0"
