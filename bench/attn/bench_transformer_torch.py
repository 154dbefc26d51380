"""The transformer encoder block in PyTorch, timed as the shared reference
kit's torch_ref.py times it: bench/ref/models.py's transformer_block
(TransformerEncoderLayer(128, 4, 512, dropout=0, batch_first=True)) on
x [16, 64, 128]; inference in eval mode under torch.inference_mode (the
layer's fused fast path), and forward + backward of y against a fixed
gradient in train mode (no optimizer step). One row each, per thread count
given, in bench/ref/timing.py's schema.
  /usr/bin/python3 bench/attn/bench_transformer_torch.py [--threads 1,2] [--json]"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ref"))
import models as M  # noqa: E402
from timing import emit, measure, parse_args, result_row  # noqa: E402

N, T = 16, 64


def rows(threads, a):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    blk = M.transformer_block()
    xs = torch.randn(N, T, 128, requires_grad=True)
    gout = torch.randn(N, T, 128)
    flop = M.transformer_fwd_flop(N, T)

    def fwd_bwd():
        blk.zero_grad(set_to_none=True)
        xs.grad = None
        blk(xs).backward(gout)

    def infer():
        with torch.inference_mode():
            blk(xs.detach())

    blk.train()
    yield result_row("transformer_fwd_bwd", "torch-eager", threads, N,
                     measure(fwd_bwd, a.warmup, a.iters, a.min_time), 3 * flop, unit="seqs/s")
    blk.eval()
    yield result_row("transformer_infer", "torch-eager", threads, N,
                     measure(infer, a.warmup, a.iters, a.min_time), flop, unit="seqs/s")


def main():
    a = parse_args(__doc__)
    for threads in a.threads:
        for row in rows(threads, a):
            if a.json:
                emit(row)
            else:
                print("torch %s: %d thread(s): median %.2f ms, CPU %.2f ms" % (
                    row["name"], threads, row["median_ms"], row["cpu_median_ms"]))


if __name__ == "__main__":
    main()
