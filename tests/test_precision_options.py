"""--amp [fp16|bf16], --checkpoint-learner and channels_last: the flags, and their numerics on the CPU.

The precision options act on CUDA only (``tests/test_cuda.py`` runs them there); on the CPU, PyTorch's own
bfloat16 autocast and channels_last kernels let us check that the model has no dtype or memory-order
assumption and that the recompute paths stay exact under autocast.
"""
from __future__ import annotations

import pytest
import torch

from engine.args import build_parser
from engine.loops import autocast
from model import build_model
from model.recompute import RecomputeScope
from tests.model_golden_inputs import make_inputs, random_state_dict


@pytest.mark.parametrize(("argv", "amp"), [([], False), (["--amp"], "fp16"), (["--amp", "fp16"], "fp16"),
                                           (["--amp", "bf16"], "bf16")])
def test_amp_flag_keeps_meaning_float16_alone(argv, amp):
    args = build_parser("train").parse_args(argv)
    assert args.amp == amp and args.checkpoint_learner is False
    assert build_parser("train").parse_args(["--checkpoint-learner"]).checkpoint_learner


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_autocast_dtypes_on_cuda_only():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert autocast(cuda, "bf16").fast_dtype == torch.bfloat16
    assert autocast(cuda, "fp16").fast_dtype == autocast(cuda, True).fast_dtype == torch.float16
    assert not isinstance(autocast(cpu, "bf16"), torch.autocast) and not isinstance(autocast(cuda, False),
                                                                                   torch.autocast)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_model("vgg16", backbone_weights="none")
    net.load_state_dict(random_state_dict(net.state_dict(), 3))
    net.backbone.requires_grad_(False)
    return net.train_mode()


def _loss(net: torch.nn.Module, bf16: bool = False) -> torch.Tensor:
    """A training forward (gradients on, so the recompute scope is used) under CPU bf16 autocast or not."""
    batch = make_inputs(2, bsz=1, size=32)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        _, _, loss = net(query_img=batch["query_img"], support_img=batch["support_imgs"][:, 0],
                         support_cam=batch["support_cams"][:, 0], query_cam=batch["query_cam"],
                         query_mask=batch["query_mask"], support_mask=batch["support_masks"][:, 0], stage=2)
    return loss.detach().float()


def test_bfloat16_autocast_training_forward_on_the_cpu(model):
    """bf16 autocast: the training forward has a finite loss close to fp32's, with or without the recompute
    scope. (The backward is checked on CUDA: on the CPU, PyTorch 2.14's bfloat16 convolution weight gradients
    for these small images are not even reproducible, with the released model's code too.)"""
    loss32, loss16 = _loss(model), _loss(model, bf16=True)
    model.recompute_activations = False
    try:
        plain = _loss(model, bf16=True)
    finally:
        model.recompute_activations = True
    assert torch.isfinite(loss16) and loss16.item() == pytest.approx(loss32.item(), rel=5e-2)
    assert torch.equal(loss16, plain)


def test_recipes_are_rebuilt_under_the_autocast_state_of_the_forward():
    """GroupNorm runs in float32 under autocast, the linear layer in bfloat16: the rebuilt activation must be
    the forward's (same dtype, same values), so the gradients equal those of the plain graph bit for bit."""
    torch.manual_seed(0)
    norm, head = torch.nn.GroupNorm(2, 8), torch.nn.Linear(5, 3)
    x = torch.randn(4, 8, 5, requires_grad=True)

    def run(scope):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hidden = norm(x)
            if scope is not None:
                scope.recomputable(hidden, _norm_relu, x, norm)
            out = head(hidden.relu_())
        out.float().square().sum().backward()
        grads = [t.grad.clone() for t in (x, norm.weight, head.weight)]
        for t in (x, norm.weight, head.weight):
            t.grad = None
        return grads

    plain = run(None)
    with RecomputeScope() as scope:
        lean = run(scope)
    assert all(torch.equal(a, b) for a, b in zip(plain, lean))


def _norm_relu(x: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:
    return norm(x).relu_()


def test_channels_last_keeps_the_outputs_and_the_state_dict(model):
    torch.manual_seed(0)
    net = build_model("vgg16", backbone_weights="none")
    net.load_state_dict(model.state_dict())
    batch = make_inputs(2, bsz=1, size=48)
    inputs = dict(query_img=batch["query_img"], support_img=batch["support_imgs"][:, 0],
                  support_cam=batch["support_cams"][:, 0], query_cam=batch["query_cam"])
    with torch.no_grad():
        expected, _ = net.eval()(**inputs, stage=2)
        net.use_channels_last()
        out, _ = net(**inputs, stage=2)
    assert net.convz0.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), model.state_dict().values()))
