"""The parts of ``python -m fastlstm bench``, one job per module. fastlstm/benchmark.py is the
command line, describes the method, and re-exports what tests and bench/ use."""
