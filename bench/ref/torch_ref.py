#!/usr/bin/python3
"""PyTorch CPU timings of kiln's benchmark workloads (bench/ref/models.py).

  bench/ref/torch_ref.py --threads N [--only REGEX] [--iters 30] [--warmup 10]
                         [--min-time 1.0] [--no-jit] [--profile]

Runs in a process whose OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and
MKL_NUM_THREADS are N (it re-executes itself to get them: Debian's torch
calls the pthread OpenBLAS for fp32 matmul, whose pool reads the variable
once and ignores torch.set_num_threads), with torch.set_num_threads(N).
Rows per model: the training step (Adam lr 1e-3, cross-entropy) in eager
mode, inference in eager mode (inference_mode) and, unless --no-jit,
through torch.jit.trace + freeze and + optimize_for_inference.
Output: JSON lines (bench/ref/timing.py) on stdout, a line per row on stderr.
--only matches the workload names (mlp_train_step, resnet_infer, ...).
"""
import argparse
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import emit, measure, result_row, threads_env  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--min-time", type=float, default=1.0)
    p.add_argument("--only", default=None)
    p.add_argument("--no-jit", action="store_true")
    p.add_argument("--profile", action="store_true", help="also print each row's top ops by self CPU time")
    return p.parse_args()


def train_step(torch, model, x, y):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ce = torch.nn.functional.cross_entropy

    def step():
        opt.zero_grad(set_to_none=True)
        ce(model(x), y).backward()
        opt.step()
    return step


def inference(torch, model, x, grad_mode):
    def f():
        with grad_mode():
            model(x)
    return f


def jit_variants(torch, model, x):
    """(framework, module) for trace + freeze and + optimize_for_inference."""
    out = []
    with torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(model, x))
        out.append(("torch-jit-freeze", frozen))
        try:
            ofi = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, x)))
            out.append(("torch-jit-ofi", ofi))
        except Exception as e:  # noqa: BLE001  (not every build has the passes)
            emit({"kind": "error", "framework": "torch-jit-ofi", "error": repr(e)[:300]})
    return out


def profile_row(torch, name, framework, threads, fn, n=5):
    from torch.autograd import profiler
    with profiler.profile() as prof:
        for _ in range(n):
            fn()
    evs = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    tot = sum(e.self_cpu_time_total for e in evs) or 1
    top = [[e.key, round(e.self_cpu_time_total / n / 1e3, 4), round(100.0 * e.self_cpu_time_total / tot, 1)]
           for e in evs[:8]]
    emit({"kind": "profile", "name": name, "framework": framework, "threads": threads,
          "top_self_cpu_ms_per_iter_pct": top})


def run(args):
    import torch
    import models as M

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    emit({"kind": "header", "framework": "torch", "torch": torch.__version__, "threads": args.threads,
          "torch_get_num_threads": torch.get_num_threads(),
          "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}})
    only = re.compile(args.only) if args.only else None

    def bench(name, framework, batch, fn, flop):
        if only and not only.search(name):
            return
        times = measure(fn, args.warmup, args.iters, args.min_time)
        emit(result_row(name, framework, args.threads, batch, times, flop))
        if args.profile:
            profile_row(torch, name, framework, args.threads, fn)

    for fam, w in M.WORKLOADS.items():
        if only and not only.search(fam + "_train_step") and not only.search(fam + "_infer"):
            continue
        model = w["make"]()
        b = w["train_batch"]
        x, y = torch.randn(b, *w["input"]), torch.randint(0, 10, (b,))
        model.train()
        bench(fam + "_train_step", "torch-eager", b, train_step(torch, model, x, y), w["train_flop"](b))
        model.eval()
        for b in w["infer_batches"]:
            x = torch.randn(b, *w["input"])
            flop = w["fwd_flop"](b)
            bench(fam + "_infer", "torch-eager", b, inference(torch, model, x, torch.inference_mode), flop)
            if args.no_jit or (only and not only.search(fam + "_infer")):
                continue
            for fw, m in jit_variants(torch, model, x):
                bench(fam + "_infer", fw, b, inference(torch, m, x, torch.no_grad), flop)


def main():
    args = parse_args()
    if os.environ.get("OPENBLAS_NUM_THREADS") != str(args.threads):
        os.execve(sys.executable, [sys.executable] + sys.argv, threads_env(args.threads))
    run(args)


if __name__ == "__main__":
    main()
