"""A small snntorch network, as in NeuroBench's examples: Linear -> Leaky, three times, over T steps.

Leaky integrate-and-fire (snntorch ``Leaky``): U[t+1] = beta U[t] + W X[t+1] - S[t] U_thr,
S[t] = H(U[t] - U_thr). The input is a float current (so the first layer does MACs, the next two ACs).
"""

from __future__ import annotations

import snntorch as snn
import torch
import torch.nn as nn


class SmallSNN(nn.Module):
    def __init__(self, n_in: int = 20, hidden: int = 32, n_out: int = 10, beta: float = 0.9):
        super().__init__()
        self.fc1, self.lif1 = nn.Linear(n_in, hidden), snn.Leaky(beta=beta)
        self.fc2, self.lif2 = nn.Linear(hidden, hidden), snn.Leaky(beta=beta)
        self.fc3, self.lif3 = nn.Linear(hidden, n_out), snn.Leaky(beta=beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (batch, steps, n_in) -> spikes (batch, steps, n_out)
        mem1, mem2, mem3 = self.lif1.init_leaky(), self.lif2.init_leaky(), self.lif3.init_leaky()
        out = []
        for t in range(x.shape[1]):
            s1, mem1 = self.lif1(self.fc1(x[:, t]), mem1)
            s2, mem2 = self.lif2(self.fc2(s1), mem2)
            s3, mem3 = self.lif3(self.fc3(s2), mem3)
            out.append(s3)
        return torch.stack(out, dim=1)


def make(batch: int = 4, steps: int = 8, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = SmallSNN().eval()
    inputs = torch.rand(batch, steps, 20) * 2.0  # float input current
    return {"model": model, "inputs": inputs, "samples": batch}
