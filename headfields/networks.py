"""Network blocks shared by deformers, encoders and decoders: plain fully connected stacks.

They live here, below all three, so that an encoder or a deformer need not import a decoder for its MLP.
"""

from __future__ import annotations

from torch import nn

__all__ = ["mlp", "mlp_trunk"]


def mlp_trunk(in_dim: int, hidden_dim: int, hidden_layers: int) -> nn.Sequential:
    """``hidden_layers`` ReLU layers of width ``hidden_dim`` (none: the identity); its output width is
    ``hidden_dim``, or ``in_dim`` without layers. For networks with several output heads on one trunk."""
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(hidden_layers):
        layers += [nn.Linear(width, hidden_dim), nn.ReLU()]
        width = hidden_dim
    return nn.Sequential(*layers)


def mlp(in_dim: int, hidden_dim: int, hidden_layers: int, out_dim: int) -> nn.Sequential:
    """``hidden_layers`` ReLU layers of width ``hidden_dim`` and a linear output layer (tiny-cuda-nn's layout):
    :func:`mlp_trunk` and a ``nn.Linear`` to ``out_dim``, in one ``nn.Sequential`` (``net[-1]`` is the output).

    ```python
    net = mlp(32, hidden_dim=64, hidden_layers=2, out_dim=16)  # INSTA's density MLP
    nn.init.zeros_(net[-1].weight)  # an output that starts at zero
    out = net(torch.randn(1024, 32))  # [1024, 16]
    ```
    """
    trunk = mlp_trunk(in_dim, hidden_dim, hidden_layers)
    return nn.Sequential(*trunk, nn.Linear(hidden_dim if hidden_layers else in_dim, out_dim))
