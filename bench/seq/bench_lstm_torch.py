"""The workload of bench_lstm.c in PyTorch: embedding(64, 64), LSTM 128,
sequence 64, batch 32, dense to 64, cross-entropy, Adam; one training step
timed at a time after warm-up steps (bench/ref/timing.py: at least --iters,
more until --min-time seconds), at each thread count given.
  /usr/bin/python3 bench/seq/bench_lstm_torch.py [--threads 1,2] [--json]"""
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ref"))
from timing import emit, measure, parse_args, result_row  # noqa: E402

N, T, V = 32, 64, 64


class LM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, 64)
        self.lstm = nn.LSTM(64, 128, batch_first=True)
        self.out = nn.Linear(128, V)

    def forward(self, ids):
        h, _ = self.lstm(self.emb(ids))
        return self.out(h)


def main():
    a = parse_args(__doc__, iters=20, warmup=3, min_time=0)
    for threads in a.threads:
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        model = LM()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        ids = (torch.arange(N * T) * 7 + 3).remainder(V).reshape(N, T)
        last = {}

        def step():
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(ids).reshape(-1, V), ids.reshape(-1))
            loss.backward()
            opt.step()
            last["loss"] = loss.item()

        row = result_row("lstm_train_step", "torch-eager", threads, N,
                         measure(step, a.warmup, a.iters, a.min_time), None)
        row["loss"] = round(last["loss"], 6)
        if a.json:
            emit(row)
        else:
            print("torch lstm train step: %d thread%s: median %.2f ms, CPU %.2f ms (loss %.4f)"
                  % (threads, "s" if threads > 1 else "", row["median_ms"], row["cpu_median_ms"],
                     row["loss"]))


if __name__ == "__main__":
    main()
