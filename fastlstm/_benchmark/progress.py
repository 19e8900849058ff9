"""The progress lines on stderr: what runs, the time elapsed, and an estimate of what is left."""
import sys
import time

from .workloads import TARGET_ROUND, mode_flops


class Progress:
    """Lines on stderr: what runs, time elapsed, and an estimate of what is left (a rough
    model of each planned step, corrected by how long the finished ones really took)."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.start = time.perf_counter()
        self.planned = {}
        self.done_model = 0.0
        self.done_real = 0.0
        self._step_start = None

    def plan(self, key, estimate):
        self.planned[key] = estimate

    def begin(self, key):
        self._step_start = time.perf_counter()

    def end(self, key):
        self.done_model += self.planned.pop(key, 0.0)
        self.done_real += time.perf_counter() - self._step_start

    def left(self):
        factor = (self.done_real + 10.0) / (self.done_model + 10.0)  # 10 s of prior weight
        return factor * sum(self.planned.values())

    def say(self, msg):
        el = time.perf_counter() - self.start
        print(f"[{_fmt_s(el)} elapsed, ~{_fmt_s(self.left())} left] {msg}", file=self.stream,
              flush=True)


def _fmt_s(sec):
    sec = max(0.0, sec)
    return f"{sec:.0f} s" if sec < 120 else f"{sec / 60:.1f} min"


def _estimate_cell(sizes, mode, threads, n_systems, opts, gap):
    """Seconds a cell should take: a crude model (~40 GFLOP/s per thread for an average
    system), used only for the progress line's estimate."""
    call = mode_flops(sizes, mode) / (40e9 * threads) + 2e-4
    per_round = n_systems * (max(call, TARGET_ROUND) + gap)
    rounds = opts["rounds"] or min(opts["max_rounds"],
                                   max(opts["min_rounds"], opts["budget"] // per_round))
    return n_systems * 3 * call + rounds * per_round + 0.05 * n_systems
