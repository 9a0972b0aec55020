"""The ``pqx bench`` figures of watching a run: a CodebookMonitor in a user's own training loop,
and the dashboard's views beside a long fit (run in a subprocess, so the library imports no UI).

  monitor_overhead              step time of a small VQ autoencoder's training loop (torch,
                                straight-through nearest-codeword VQ, M=4 codebooks of K=256,
                                batches of 256 digits, ~4 ms a step) with ``CodebookMonitor.update``
                                (every=10) / without, interleaved in one loop: blocks of 2 steps
                                alternate between calling the monitor and not, and the figure is
                                the median over adjacent block pairs of the monitored block's time
                                over the unmonitored one's (median of 3 runs of 400 steps). Step
                                times here drift by ±30% over tens of steps, so the ratio of
                                whole loops, timed apart, spread by 13% from pair to pair; blocks
                                a few ms apart cancel the drift (a no-op monitor read 1.001-1.007, a
                                100 µs busy-wait 1.023-1.032). Known bias: the cache the monitor
                                disturbs slows the next step, and half of those steps are the
                                unmonitored block's. Target ≤ 1.03.
  dashboard_redraws_per_second  see :mod:`widgets.bench`. Target ≥ 5.
  dashboard_training_slowdown   see :mod:`widgets.bench`. Target ≤ 1.05.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
from torch import nn

from .data import load_digits
from .monitor import CodebookMonitor


class _VQAutoencoder(nn.Module):
    """64 → 32 → 64 autoencoder whose 32-d code is quantized by M=4 codebooks of K (8-d each)."""

    def __init__(self, M: int = 4, K: int = 256):
        super().__init__()
        self.M = M
        self.encoder = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32))
        self.decoder = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 64))
        self.codebooks = nn.Parameter(torch.randn(M, K, 32 // M) * 0.1)

    def forward(self, x):
        z = self.encoder(x).reshape(len(x), self.M, -1)                      # (b, M, d)
        codes = torch.cdist(z.transpose(0, 1), self.codebooks).argmin(-1).T   # (b, M)
        q = self.codebooks[torch.arange(self.M)[None, :], codes]             # (b, M, d)
        commit = ((q - z.detach()) ** 2).mean() + 0.25 * ((z - q.detach()) ** 2).mean()
        q = z + (q - z).detach()                                             # straight-through
        return self.decoder(q.reshape(len(x), -1)), codes, commit


def monitor_overhead(steps: int = 400, repeats: int = 3, batch: int = 256, block: int = 2) -> dict:
    """Ratio of the monitored steps' time to the unmonitored ones' (see the module docstring):
    {"ratio": median of the runs, "runs": each run's median block-pair ratio, "update_us": the
    median time inside ``update`` per call, "step_ms": the unmonitored steps' median, ...}."""
    X = torch.from_numpy(load_digits().base.astype(np.float32) / 16.0)
    order = torch.Generator().manual_seed(0)
    batches = [X[torch.randint(0, len(X), (batch,), generator=order)] for _ in range(steps)]

    def run(n: int) -> tuple[float, float, float]:
        torch.manual_seed(0)
        model = _VQAutoencoder()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        monitor = CodebookMonitor(256, 4, every=10)
        times = {True: [], False: []}
        inside = []
        for i, x in enumerate(batches[:n]):
            monitored = (i // block) % 2 == 0
            t0 = time.perf_counter()
            recon, codes, commit = model(x)
            loss = ((recon - x) ** 2).mean() + commit
            opt.zero_grad()
            loss.backward()
            opt.step()
            if monitored:
                t1 = time.perf_counter()
                monitor.update(codes, losses={"recon": loss.detach(), "commit": commit.detach()})
                inside.append(time.perf_counter() - t1)
            times[monitored].append(time.perf_counter() - t0)
        monitor.close()
        pairs = min(len(times[True]), len(times[False])) // block
        on = np.add.reduceat(np.array(times[True][:pairs * block]), np.arange(0, pairs * block, block))
        off = np.add.reduceat(np.array(times[False][:pairs * block]), np.arange(0, pairs * block, block))
        return float(np.median(on / off)), float(np.median(inside)), float(np.median(times[False]))

    run(min(steps, 40))  # warm-up
    runs = [run(steps) for _ in range(repeats)]
    return {"ratio": float(np.median([r[0] for r in runs])), "runs": [round(r[0], 4) for r in runs],
            "update_us": round(1e6 * float(np.median([r[1] for r in runs])), 1),
            "step_ms": round(1e3 * float(np.median([r[2] for r in runs])), 3),
            "steps": steps, "block": block, "every": 10}


def dashboard_figures(quick: bool = False) -> dict:
    """:mod:`widgets.bench` run in a fresh subprocess (its JSON), or ``{"error": ...}`` when the
    widgets cannot run there (no ipywidgets, say)."""
    cmd = [sys.executable, "-m", "widgets.bench"] + (["--quick"] if quick else [])
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["widgets.bench failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])
