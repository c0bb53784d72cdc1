"""Device selection shared by every script (one ``--device`` flag)."""
from __future__ import annotations

import torch

from common.errors import FlagError


def resolve_device(flag: str = "auto") -> torch.device:
    """Turn a ``--device`` value into a :class:`torch.device`.

    ``"auto"`` picks CUDA when a GPU is visible and the CPU otherwise; anything else (``"cpu"``,
    ``"cuda"``, ``"cuda:1"``) is taken as given, with a clear error when CUDA is asked for but absent.
    """
    if flag == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(flag)
    except RuntimeError as exc:
        raise FlagError(f"--device {flag!r} is not a valid device (use auto, cpu, cuda or cuda:N)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FlagError(f"--device {flag!r} asks for CUDA, but no GPU is visible to PyTorch (use --device cpu)")
    return device


def configure_tf32(enabled: bool) -> None:
    """Allow TF32 (10-bit mantissa) float32 matmuls and cuDNN convolutions on Ampere+ GPUs, or forbid them.

    The released code ran on PyTorch 1.5, which had no TF32: every float32 product was a full float32 one. So
    the scripts forbid it unless ``--tf32`` is given (PyTorch itself allows TF32 in cuDNN convolutions by
    default). No effect on the CPU.
    """
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
