"""winnow benchmarks: `python -m bench` (see bench/__main__.py and bench/RESULTS.md). Not part of the tests."""
