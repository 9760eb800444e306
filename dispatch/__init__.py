"""The dispatch core: pure, deterministic decisions over frozen data.

Nothing here performs I/O or reads a clock: ``now_ms`` is always an argument, so the same
inputs give the same decisions, live or in replay.
"""
