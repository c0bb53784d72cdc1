"""Seeding, as the released code does it (``common/utils.fix_randseed``)."""
from __future__ import annotations

import random
from typing import Optional

import numpy as np
import torch


def fix_randseed(seed: Optional[int]) -> int:
    """Seed NumPy's global RNG and torch (CPU and CUDA); ``None`` draws a fresh seed as released.

    Returns the seed used, so a caller can log it.
    """
    if seed is None:
        seed = int(random.random() * 1e5)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    return seed
