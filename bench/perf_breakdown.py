#!/usr/bin/python3
"""Where a kiln run's time goes, from a perf profile, in the categories that
matter for speed work: the GEMM micro-kernel, GEMM packing, convolution
window tasks (im2col, col2im), other generated kernels (elementwise,
reductions, pooling), the OpenMP runtime (threads waiting at barriers),
libc, the kernel, and compiling (LLVM), which is left out of the shares.

  bench/perf_breakdown.py PERF.DATA [TOP]

Generated code is only named in the profile when the JIT told perf about
it: LLVM's perf listener writes jit-PID.dump files and `perf inject --jit`
turns them into symbols. KILN_PERF=1 makes kiln's JIT register that
listener (bench_kiln and the kiln tool read it; through the C API it is
KilnOptions.perf); without it, generated code shows as one anonymous
region. Profile the steady state, after compiling, e.g. (bench_kiln with
many warm-up calls and perf's start delayed past the compile):

  KILN_PERF=1 perf record -k 1 -D 10000 -o p.data build/bench/bench_kiln --mode infer \\
      --batch 1 --warmup 200000 --iters 100 --min-time 0 bench/models/mlp.kiln
  perf inject --jit -i p.data -o p.jit.data && bench/perf_breakdown.py p.jit.data
"""
import collections
import re
import subprocess
import sys


def samples(data):
    """(percent, dso, symbol) of every symbol in the profile."""
    out = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort=dso,sym", "--stdio", "-g", "none",
                          "--percent-limit", "0"], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+\[.\]\s+(.*)", line)
        if m:
            rows.append((float(m.group(1)), m.group(2), m.group(3).strip()))
    return rows


def category(dso, sym):
    """Kernel names follow codegen: kiln_gemm_<variant>.micro / .pack_a /
    .pack_b, and k<node>.<op>[+<fused>].task for a node's parallel task."""
    if dso.startswith("jitted"):
        if sym.endswith(".micro"):
            return "gemm micro-kernel"
        if ".pack_" in sym:
            return "gemm packing"
        if sym.startswith("kiln_gemm"):
            return "gemm edges and driver"
        if re.match(r"k\d+\.conv2d", sym):
            return "conv windows (im2col, col2im)"
        return "other generated kernels"
    if "LLVM" in dso:
        return "compiling (LLVM)"
    if "gomp" in dso:
        return "OpenMP runtime (waiting)"
    if dso.startswith("libc"):
        return "libc"
    if dso.startswith("[kernel"):
        return "kernel"
    return "other (" + dso + ")"


def main():
    rows = samples(sys.argv[1])
    top_n = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    cats, syms = collections.Counter(), collections.Counter()
    for pct, dso, sym in rows:
        c = category(dso, sym)
        cats[c] += pct
        if c != "compiling (LLVM)":
            syms[sym] += pct
    run = sum(v for k, v in cats.items() if k != "compiling (LLVM)") or 1
    print("%-32s %8s %8s" % ("category", "samples", "of run"))
    for c, v in cats.most_common():
        print("%-32s %7.1f%% %s" % (c, v, "" if c == "compiling (LLVM)" else "%7.1f%%" % (100 * v / run)))
    print("\ntop symbols, share of the run:")
    for s, v in syms.most_common(top_n):
        print("%7.1f%%  %s" % (100 * v / run, s))


if __name__ == "__main__":
    main()
