"""The ``pqx bench`` figures of watching a run: a CodebookMonitor in a user's own training loop,
and the dashboard's views beside a long fit (run in a subprocess, so the library imports no UI).

  monitor_overhead              step time of a small VQ autoencoder's training loop (torch,
                                straight-through nearest-codeword VQ, M=4 codebooks of K=256,
                                batches of 256 digits) with ``CodebookMonitor.update`` on every
                                batch / without: the median of 21 interleaved pairs' ratios, the
                                order within a pair alternating (as ``hook_overhead``; the ratio
                                of two medians of 7 read 1.00 to 1.13 from run to run here). An
                                update costs ~85 µs of a ~3.3 ms step. Target ≤ 1.03.
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


def monitor_overhead(steps: int = 60, repeats: int = 21, batch: int = 256) -> dict:
    """Ratio of the loop's time with a monitor to without (see the module docstring)."""
    X = torch.from_numpy(load_digits().base.astype(np.float32) / 16.0)
    order = torch.Generator().manual_seed(0)
    batches = [X[torch.randint(0, len(X), (batch,), generator=order)] for _ in range(steps)]

    def loop(monitored: bool) -> float:
        torch.manual_seed(0)
        model = _VQAutoencoder()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        monitor = CodebookMonitor(256, 4, every=10) if monitored else None
        t0 = time.perf_counter()
        for x in batches:
            recon, codes, commit = model(x)
            loss = ((recon - x) ** 2).mean() + commit
            opt.zero_grad()
            loss.backward()
            opt.step()
            if monitor is not None:
                monitor.update(codes, losses={"recon": loss.detach(), "commit": commit.detach()})
        if monitor is not None:
            monitor.close()
        return time.perf_counter() - t0

    from .bench import alternating_pairs

    loop(False)  # warm-up
    r = alternating_pairs(lambda: loop(False), lambda: loop(True), repeats)
    return {"ratio": r["ratio"], "ratio_of_medians": r["ratio_of_medians"], "with_monitor_s": r["treated_s"],
            "without_s": r["base_s"], "pairs": repeats, "steps": steps}


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
