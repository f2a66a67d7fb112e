"""The benchmark behind `scripts/bench` (issue 6): workload, servers, clients, report.

Benchmark-only code: nothing here is installed with modgate. It builds on the test
world (tests/world), which `scripts/bench.py` puts on sys.path.
"""
