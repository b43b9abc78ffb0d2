"""A 2-layer LSTM language model on synthetic tokens."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import Workload

VOCAB, EMBED, HIDDEN, LAYERS, SEQ = 512, 64, 128, 2, 32


class LSTMModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, EMBED)
        self.lstm = nn.LSTM(EMBED, HIDDEN, num_layers=LAYERS, batch_first=True)
        self.head = nn.Linear(HIDDEN, VOCAB)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.emb(idx))
        return self.head(out)


def make_batch(batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if torch.device(device).type == "meta":
        idx = torch.empty(batch_size, SEQ + 1, dtype=torch.long, device=device)
    else:
        gen = torch.Generator().manual_seed(batch_size)
        idx = torch.randint(0, VOCAB, (batch_size, SEQ + 1), generator=gen).to(device)
    return idx[:, :-1].contiguous(), idx[:, 1:].contiguous()


def loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))


def workload() -> Workload:
    return Workload("lstm", LSTMModel, make_batch, loss,
                    description=f"LSTM LM: {LAYERS} layers, hidden {HIDDEN}, seq {SEQ}",
                    tags={"seq_len": SEQ, "hidden": HIDDEN, "layers": LAYERS})
