"""Small models for fast tests: digits-shaped input (1, 8, 8), 10 classes."""

from __future__ import annotations

import torch
from torch import nn

NUM_CLASSES = 10


class MLP(nn.Module):
    """Flatten -> Linear(64, 64) -> ReLU -> Linear(64, 32) -> ReLU -> Linear(32, 10)."""

    def __init__(self, hidden: int = 64, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(64, hidden)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, hidden // 2)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(hidden // 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.fc1(self.flatten(x)))
        x = self.relu2(self.fc2(x))
        out: torch.Tensor = self.fc3(x)
        return out


class SmallCNN(nn.Module):
    """Two conv-BN-ReLU layers (8, 16 channels), max-pool, linear head."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.pool(self.relu2(self.bn2(self.conv2(x))))
        out: torch.Tensor = self.fc(self.flatten(x))
        return out


def mlp() -> MLP:
    return MLP()


def smallcnn() -> SmallCNN:
    return SmallCNN()
