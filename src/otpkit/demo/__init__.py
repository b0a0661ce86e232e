"""``otpkit demo``: a three-node cluster on this machine, a job, a fail-over."""

from otpkit.demo._run import main

__all__ = ["main"]
