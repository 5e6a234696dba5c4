"""Device selection: ``device="auto"`` means CUDA when present, else CPU."""
from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``/``None``/a name into a :class:`torch.device`."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but no CUDA GPU is visible; "
                           "use device='auto' or 'cpu'")
    return dev


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch (CPU and CUDA) and numpy; return a CPU generator for explicit use."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
