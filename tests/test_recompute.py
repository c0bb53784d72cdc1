"""Less memory for backward, same numbers: recompute scopes, checkpointing, the lean clamp / add / conv4d.

Every check compares against the plain graph: the recomputed paths must give bitwise the same gradients (the
activation checkpointing sums the gradients of a parameter's uses in another order: equal within rounding).
"""
from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn

from model import build_model
from model.conv4d import CenterPivotConv4d, add_contiguous
from model.correlation import clamp_min_zero, multilayer_correlation
from model.recompute import RecomputeScope, checkpoint
from tests.model_golden_inputs import make_inputs, random_state_dict


def _norm_relu(y: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    return norm(y).relu_()


def _grads(module: nn.Module, *tensors: torch.Tensor) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.parameters()] + [t.grad.clone() for t in tensors]


def test_scope_drops_registered_tensors_and_rebuilds_them_exactly():
    torch.manual_seed(0)
    net = nn.ModuleDict({"conv": nn.Conv2d(3, 8, 3, padding=1), "norm": nn.GroupNorm(2, 8),
                         "head": nn.Conv2d(8, 4, 3, padding=1)})
    x = torch.randn(2, 3, 10, 10, requires_grad=True)

    def run(scope):
        y = net["conv"](x)
        hidden = net["norm"](y)
        if scope is not None:  # before the in-place ReLU saves it: the recipe gives the value it is saved with
            scope.recomputable(hidden, _norm_relu, y, net["norm"])
        hidden = hidden.relu_()
        out = net["head"](hidden[:, :, 1:, :].permute(0, 1, 3, 2))  # a view of the registered tensor is saved
        return out, weakref.ref(hidden)

    out, _ = run(None)
    out.square().sum().backward()
    plain = _grads(net, x)
    net.zero_grad()
    x.grad = None
    with RecomputeScope() as scope:
        out, hidden = run(scope)
    gc.collect()
    assert hidden() is None  # not kept by the graph: rebuilt in backward
    out.square().sum().backward()
    assert all(torch.equal(a, b) for a, b in zip(plain, _grads(net, x)))


def test_recipe_that_gives_another_layout_is_refused():
    x = torch.randn(4, 5, requires_grad=True)
    with RecomputeScope() as scope:
        y = x * 2
        scope.recomputable(y, lambda t: (t * 2).t().contiguous().t(), x)
        z = (y * y).sum()
    with pytest.raises(RuntimeError, match="differs from the one of the forward"):
        z.backward()


def test_checkpoint_keeps_only_its_inputs_and_gives_the_plain_gradients():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 6))
    x = torch.randn(3, 6, requires_grad=True)
    net(x).pow(2).sum().backward()
    plain = _grads(net, x)
    net.zero_grad()
    x.grad = None

    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        (out,) = checkpoint(lambda inp: (net(inp),), [x], list(net.parameters()))
    assert [t.data_ptr() for t in saved] == [x.data_ptr()]  # nothing of the region's activations
    out.pow(2).sum().backward()
    for a, b in zip(plain, _grads(net, x)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_clamp_keeps_its_output_and_passes_the_gradient_where_the_input_is_not_negative():
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-30, 3.0, float("nan"), -1e-30], requires_grad=True)
    grad = torch.arange(1.0, 8.0)
    x.clamp(min=0).backward(grad)
    expected = x.grad.clone()
    x.grad = None
    out = clamp_min_zero(x)
    out.backward(grad)
    assert torch.equal(x.grad, expected)  # exact zeros (either sign) pass the gradient, as clamp's backward does
    assert torch.equal(out.nan_to_num(), x.detach().clamp(min=0).nan_to_num())


def test_add_contiguous_sums_permuted_views_into_a_contiguous_tensor():
    a = torch.randn(2, 3, 4, 5).permute(0, 2, 1, 3).requires_grad_()
    b = torch.randn(2, 5, 4, 3).permute(0, 2, 3, 1).requires_grad_()  # (2, 4, 3, 5), another memory order
    a2, b2 = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    out = add_contiguous(a, b)
    assert out.is_contiguous() and torch.equal(out, a2 + b2)
    grad = torch.randn(out.shape)
    out.backward(grad)
    (a2 + b2).backward(grad)
    assert torch.equal(a.grad, a2.grad) and torch.equal(b.grad, b2.grad)


def _hsnet_conv4d(conv: CenterPivotConv4d, x: torch.Tensor) -> torch.Tensor:
    """HSNet's CenterPivotConv4d.forward (permute().contiguous() around each 2D convolution)."""
    bsz, inch, ha, wa, hb, wb = x.shape
    sh, sw = conv.support_stride
    pruned = x[..., ::sh, ::sw].contiguous()
    hbp, wbp = pruned.shape[-2:]
    out1 = conv.conv1(pruned.permute(0, 4, 5, 1, 2, 3).contiguous().view(-1, inch, ha, wa))
    out1 = out1.view(bsz, hbp, wbp, -1, ha, wa).permute(0, 3, 4, 5, 1, 2).contiguous()
    out2 = conv.conv2(x.permute(0, 2, 3, 1, 4, 5).contiguous().view(-1, inch, hb, wb))
    out2 = out2.view(bsz, ha, wa, -1, hbp, wbp).permute(0, 3, 1, 2, 4, 5).contiguous()
    return out1 + out2


@pytest.mark.parametrize("layout", ["contiguous", "correlation", "transposed"])
def test_conv4d_is_hsnets_bit_for_bit_in_every_input_layout(layout):
    torch.manual_seed(0)
    conv = CenterPivotConv4d(3, 8, (3, 3, 5, 5), (1, 1, 2, 2), (1, 1, 2, 2))
    logical = torch.randn(2, 3, 6, 7, 9, 8)
    if layout == "correlation":  # stored (B, Ha, Wa, C, Hb, Wb), as multilayer_correlation writes it
        x = logical.permute(0, 2, 3, 1, 4, 5).contiguous().permute(0, 3, 1, 2, 4, 5)
    elif layout == "transposed":  # the support branch's view of a correlation
        x = logical.permute(0, 1, 4, 5, 2, 3).contiguous().permute(0, 1, 4, 5, 2, 3)
    else:
        x = logical
    x = x.requires_grad_()
    ref_x = logical.detach().clone().requires_grad_()
    out = conv(x)
    assert out.is_contiguous()
    grad = torch.randn(out.shape)
    out.backward(grad)
    grads = _grads(conv, x)
    conv.zero_grad()
    expected = _hsnet_conv4d(conv, ref_x)
    expected.backward(grad)
    assert torch.equal(out, expected)
    for a, b in zip(grads, _grads(conv, ref_x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_correlation_pyramid_layout_and_values():
    torch.manual_seed(0)
    feats = [torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5), torch.randn(2, 8, 3, 3), torch.randn(2, 8, 2, 2)]
    pyramid = multilayer_correlation(feats, [f.flip(-1) for f in feats], (2, 1, 1))
    l4, l3, l2 = pyramid  # group sizes (2, 1, 1): l2 = layers 0-1, l3 = layer 2, l4 = layer 3
    assert l2.shape == (2, 2, 5, 5, 5, 5) and l3.shape == (2, 1, 3, 3, 3, 3) and l4.shape == (2, 1, 2, 2, 2, 2)
    assert l2.permute(0, 2, 3, 1, 4, 5).is_contiguous()  # (B, Ha, Wa, n, Hb, Wb) in memory
    q = feats[1].flatten(2)
    s = feats[1].flip(-1).flatten(2)
    q, s = q / (q.norm(dim=1, keepdim=True) + 1e-5), s / (s.norm(dim=1, keepdim=True) + 1e-5)
    assert torch.equal(l2[:, 1], torch.bmm(q.transpose(1, 2), s).clamp(min=0).view(2, 5, 5, 5, 5))


# ---------------------------------------------------------------- the whole model
@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    """One model per masking mode (ResNet50: the larger learner input); the options are plain attributes."""
    built = {}
    for masking in ("released", "paper"):
        torch.manual_seed(0)
        model = build_model("resnet50", backbone_weights="none", masking=masking)
        model.load_state_dict(random_state_dict(model.state_dict(), 3))
        built[masking] = model.train_mode().requires_grad_(True)
        model.backbone.requires_grad_(False)
    return built


def _training_step(model: torch.nn.Module, stage: int, recompute: bool, checkpoint_learner: bool) -> tuple:
    model.recompute_activations, model.checkpoint_learner = recompute, checkpoint_learner
    model.zero_grad(set_to_none=True)
    batch = make_inputs(1, bsz=2, size=48)
    out_q, _, loss = model(query_img=batch["query_img"], support_img=batch["support_imgs"][:, 0],
                           support_cam=batch["support_cams"][:, 0], query_cam=batch["query_cam"],
                           query_mask=batch["query_mask"], support_mask=batch["support_masks"][:, 0], stage=stage)
    loss.backward()
    return loss.detach(), out_q.detach(), {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(("masking", "stage"), [("released", 3), ("paper", 2)])
def test_recomputing_and_checkpointing_keep_the_numbers(models, masking, stage):
    """Default (recompute scope) == plain graph bit for bit; --checkpoint-learner: same forward, gradients equal
    within rounding (a parameter's four uses are summed in another order)."""
    model = models[masking]
    plain = _training_step(model, stage, recompute=False, checkpoint_learner=False)
    lean = _training_step(model, stage, recompute=True, checkpoint_learner=False)
    ckpt = _training_step(model, stage, recompute=True, checkpoint_learner=True)
    model.recompute_activations, model.checkpoint_learner = True, False
    assert torch.equal(lean[0], plain[0]) and torch.equal(lean[1], plain[1])
    assert lean[2].keys() == plain[2].keys() == ckpt[2].keys()
    assert all(torch.equal(lean[2][name], plain[2][name]) for name in plain[2])
    assert torch.equal(ckpt[0], plain[0]) and torch.equal(ckpt[1], plain[1])
    for name in plain[2]:
        torch.testing.assert_close(ckpt[2][name], plain[2][name], rtol=1e-5, atol=1e-6)
