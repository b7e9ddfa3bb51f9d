"""Debugging hooks over the executor's control points. Never imports torch."""

from midrun.debug.trace import StopAt, Tracer

__all__ = ["StopAt", "Tracer"]
