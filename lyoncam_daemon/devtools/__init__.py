"""Tools for developing and trying lyoncam, not for capturing.

Lives here: the simulated CriTer server (simulator.py, the `simulate` command) that the
tests, the benchmarks and the offline demo poll instead of the real cameras, with the real
CriTer frame it builds its frames from (data/).

May import: config, frames.
"""
