"""Timing and the JSON result row shared by the Python reference scripts.

A workload is warmed up, then timed one call at a time with perf_counter:
at least `iters` calls, more until `min_time` seconds are timed (at most
2000). A row reports the median, min and max, as the C drivers do, and the
median process CPU time of a call (cpu_median_ms): with one thread it is
the work done without the time a busy machine keeps the process waiting
(with more threads it adds up every thread, spinning included).
"""
import json
import os
import statistics
import sys
import time


def measure(fn, warmup, iters, min_time, max_iters=2000):
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    fn()
    est = max(time.perf_counter() - t0, 1e-7)
    n = max(iters, min(int(min_time / est), max_iters))
    times, cpu = [], []
    for _ in range(n):
        t, c = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return times, cpu


def result_row(name, framework, threads, batch, timed, flop, unit="samples/s"):
    times, cpu = timed
    med = statistics.median(times)
    return {
        "kind": "result", "name": name, "framework": framework, "threads": threads, "batch": batch,
        "iters": len(times), "median_ms": round(med * 1e3, 4), "min_ms": round(min(times) * 1e3, 4),
        "max_ms": round(max(times) * 1e3, 4), "throughput": round(batch / med, 2), "throughput_unit": unit,
        "gflop_per_iter": None if flop is None else round(flop / 1e9, 5),
        "gflops_at_median": None if flop is None else round(flop / med / 1e9, 2),
        "cpu_median_ms": round(statistics.median(cpu) * 1e3, 4),
    }


def emit(row):
    sys.stdout.write(json.dumps(row) + "\n")
    sys.stdout.flush()
    if row.get("kind") == "result":
        sys.stderr.write("%-18s %-18s thr=%d b=%-4d n=%-4d median %9.3f ms (min %9.3f, max %9.3f)\n" % (
            row["name"], row["framework"], row["threads"], row["batch"], row["iters"], row["median_ms"],
            row["min_ms"], row["max_ms"]))


def threads_env(n):
    """The environment a process of n threads runs in: OpenMP's pool and
    OpenBLAS's own (Debian's torch calls the pthread OpenBLAS, whose pool
    ignores torch.set_num_threads) are both set before anything loads."""
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
        env[k] = str(n)
    return env


def parse_args(doc, iters=30, warmup=10, min_time=1.0):
    """The options of a reference script: --threads 1,2 (a list of ints),
    the timing (--iters, --warmup, --min-time) and --json (rows, not text)."""
    import argparse
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--iters", type=int, default=iters)
    p.add_argument("--warmup", type=int, default=warmup)
    p.add_argument("--min-time", type=float, default=min_time)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    a.threads = [int(t) for t in a.threads.split(",")]
    return a
