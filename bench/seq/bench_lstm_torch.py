"""The workload of bench_lstm.c in PyTorch: embedding(64, 64), LSTM 128,
sequence 64, batch 32, dense to 64, cross-entropy, Adam; the median of 20
training steps after 3 warm-up steps, at 1 and 2 threads.
  /usr/bin/python3 bench/seq/bench_lstm_torch.py"""
import time

import torch
from torch import nn

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


for threads in (1, 2):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = LM()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ids = (torch.arange(N * T) * 7 + 3).remainder(V).reshape(N, T)
    times = []
    for s in range(23):
        a = time.perf_counter()
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(ids).reshape(-1, V), ids.reshape(-1))
        loss.backward()
        opt.step()
        if s >= 3:
            times.append(time.perf_counter() - a)
    times.sort()
    print("torch lstm train step: %d thread%s: median %.2f ms (loss %.4f)"
          % (threads, "s" if threads > 1 else "", times[10] * 1e3, loss.item()))
