"""Model package: shapes, frozen backbone, masking modes, 4D conv, voting, checkpoints, backbone weights."""
from __future__ import annotations

import urllib.error

import pytest
import torch

from model import build_model
from model import backbone as bb
from model.checkpoint import CheckpointMismatchError, detect_backbone, load_model_state
from model.conv4d import CenterPivotConv4d
from model.correlation import EPS, multilayer_correlation
from model.imrhsnet import IMRHSNet
from model.masking import MASKING_MODES, PaperMasking, ReleasedMasking


@pytest.fixture(scope="module")
def vgg() -> IMRHSNet:
    torch.manual_seed(0)
    return build_model("vgg16", backbone_weights="none")


@pytest.fixture(scope="module")
def r50() -> IMRHSNet:
    torch.manual_seed(0)
    return build_model("resnet50", backbone_weights=None)


def _episode(bsz: int, size: int, seed: int = 0, cam_size: int | None = None):
    g = torch.Generator().manual_seed(seed)
    side = cam_size or size // 8
    return dict(query_img=torch.randn(bsz, 3, size, size, generator=g),
                support_img=torch.randn(bsz, 3, size, size, generator=g),
                support_cam=torch.rand(bsz, side, side, generator=g),
                query_cam=torch.rand(bsz, side, side, generator=g),
                query_mask=(torch.rand(bsz, size, size, generator=g) > 0.5).float(),
                support_mask=(torch.rand(bsz, size, size, generator=g) > 0.5).float())


# ---------------------------------------------------------------- shapes
@pytest.mark.parametrize(("name", "size"), [("vgg", 64), ("vgg", 128), ("r50", 64), ("r50", 96)])
def test_output_shapes(name, size, request):
    model = request.getfixturevalue(name)
    ep = _episode(2, size)
    model.train_mode()
    with torch.no_grad():
        lq, ls, loss = model(**ep, stage=1)
    assert lq.shape == ls.shape == (2, 2, size, size) and loss.ndim == 0 and torch.isfinite(loss)
    model.eval()
    ev = {k: v for k, v in ep.items() if not k.endswith("_mask")}
    with torch.no_grad():
        lq, ls = model(**ev, stage=1)
    assert lq.shape == ls.shape == (2, 2, size, size)


def test_sizes_follow_input_and_original_imgsize(vgg):
    """Decoder logits are at H/4 (returned raw with use_original_imgsize); CAMs of another size are resized."""
    ep = _episode(1, 96, cam_size=7)
    ev = {k: v for k, v in ep.items() if not k.endswith("_mask")}
    vgg.eval()
    vgg.use_original_imgsize = True
    try:
        with torch.no_grad():
            lq, ls = vgg(**ev, stage=2)
    finally:
        vgg.use_original_imgsize = False
    assert lq.shape == ls.shape == (1, 2, 24, 24)


def test_initial_state_is_the_parameter_at_50(vgg):
    assert torch.equal(vgg.initial_state(2, (50, 50))[1], vgg.state[0])
    assert vgg.initial_state(3, (8, 8)).shape == (3, 128, 8, 8)


def test_resnet101_runs():
    model = build_model("resnet101", backbone_weights="none")
    assert model.hpn_learner.encoder_layer3[0].conv1.in_channels == 23
    with torch.no_grad():
        lq, _, _ = model.train_mode()(**_episode(1, 64), stage=1)
    assert lq.shape == (1, 2, 64, 64)


# ---------------------------------------------------------------- training: frozen backbone
def test_backbone_frozen_rest_trains(r50):
    model = r50
    model.train_mode()
    model.zero_grad(set_to_none=True)
    running = model.backbone.bn1.running_mean.clone()
    _, _, loss = model(**_episode(2, 64, seed=3), stage=2)
    loss.backward()
    assert not model.backbone.training and not any(m.training for m in model.backbone.modules())
    assert model.training and model.hpn_learner.training
    assert torch.equal(model.backbone.bn1.running_mean, running)
    for name, param in model.named_parameters():
        if name.startswith("backbone."):
            assert param.grad is None and not param.requires_grad, name
        else:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
    model.train()  # plain .train() keeps the backbone in eval mode too
    assert not model.backbone.training
    model.zero_grad(set_to_none=True)


def test_inputs_not_modified(vgg):
    ep = _episode(1, 64, seed=4)
    before = {k: v.clone() for k, v in ep.items()}
    vgg.train_mode()
    with torch.no_grad():
        vgg(**ep, stage=3)
    assert all(torch.equal(before[k], ep[k]) for k in ep)


# ---------------------------------------------------------------- backbone taps
def test_vgg_taps_pre_relu_and_shapes(vgg):
    img = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = vgg.extract_features(img)
        ref = vgg.backbone.features(img.clone())  # pool5
    assert [tuple(f.shape[1:]) for f in feats] == [(512, 8, 8)] * 3 + [(512, 4, 4)] * 3 + [(512, 2, 2)]
    assert all((f < 0).any() for f in feats[:6])  # taken before the in-place ReLU
    torch.testing.assert_close(feats[-1], ref)


def test_resnet_taps_pre_relu(r50):
    img = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = r50.extract_features(img)
        b = r50.backbone
        ref = b.layer4(b.layer3(b.layer2(b.layer1(b.maxpool(b.relu(b.bn1(b.conv1(img))))))))
    assert len(feats) == 13 and [f.shape[1] for f in feats] == [512] * 4 + [1024] * 6 + [2048] * 3
    assert (feats[-1] < 0).any()
    torch.testing.assert_close(torch.relu(feats[-1]), ref)


# ---------------------------------------------------------------- masking modes on a hand-checkable case
def _naive_corr(q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """(B, C, Ha, Wa), (B, C, Hb, Wb) -> (B, Ha, Wa, Hb, Wb) cosine with the released eps, clamped at 0."""
    qn = q / (q.norm(dim=1, keepdim=True) + EPS)
    sn = s / (s.norm(dim=1, keepdim=True) + EPS)
    return torch.einsum("bcij,bckl->bijkl", qn, sn).clamp(min=0)


def _tiny_feats(seed: int) -> list[torch.Tensor]:
    """7 VGG-like feature maps at 4x4 (l2, 3 layers), 4x4 (l3, 3 layers), 4x4 (l4, 1 layer)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 3, 4, 4, generator=g) for _ in range(7)]


def test_masking_released_swaps_cams_and_compounds():
    q, s = _tiny_feats(0), _tiny_feats(1)
    cam_q = torch.zeros(1, 4, 4); cam_q[:, :2] = 1   # query CAM: top half
    cam_s = torch.zeros(1, 4, 4); cam_s[:, :, :2] = 1  # support CAM: left half
    correlate = ReleasedMasking(q, s, bb.get_spec("vgg16").group_sizes)
    corr_q, corr_s = correlate(cam_q, cam_s)
    # stage 1: query features x SUPPORT CAM, support features x QUERY CAM
    l2 = corr_q[2][0]  # (3, Ha, Wa, Hb, Wb)
    assert (l2[:, :, 2:] == 0).all()        # query positions outside the support CAM (right half)
    assert (l2[..., 2:, :] == 0).all()      # support positions outside the query CAM (bottom half)
    expect = _naive_corr(q[0] * cam_s[:, None], s[0] * cam_q[:, None])
    torch.testing.assert_close(corr_q[2][:, 0], expect)
    torch.testing.assert_close(corr_s[2], corr_q[2].permute(0, 1, 4, 5, 2, 3))  # support corr = transpose
    # stage 2: new masks multiply onto the already-masked features
    prob_q, prob_s = torch.full((1, 4, 4), 0.5), torch.rand(1, 4, 4)
    corr_q2, _ = correlate(prob_q, prob_s)
    expect2 = _naive_corr(q[6] * cam_s[:, None] * prob_q[:, None], s[6] * cam_q[:, None] * prob_s[:, None])
    torch.testing.assert_close(corr_q2[0][:, 0], expect2)
    assert (corr_q2[0][0, 0][:, 2:] == 0).all()  # the stage-1 support CAM still zeroes the query's right half


def test_masking_paper_uses_own_masks_without_compounding():
    q, s = _tiny_feats(0), _tiny_feats(1)
    cam_q = torch.zeros(1, 4, 4); cam_q[:, :2] = 1
    cam_s = torch.zeros(1, 4, 4); cam_s[:, :, :2] = 1
    correlate = PaperMasking(q, s, bb.get_spec("vgg16").group_sizes)
    corr_q, corr_s = correlate(cam_q, cam_s)
    torch.testing.assert_close(corr_q[2][:, 0], _naive_corr(q[0], s[0] * cam_s[:, None]))
    torch.testing.assert_close(corr_s[2][:, 0], _naive_corr(s[0], q[0] * cam_q[:, None]))
    assert (corr_q[2][0][..., 2:] == 0).all() and (corr_q[2][0][:, :, :, :, :2] != 0).any()
    prob_q, prob_s = torch.rand(1, 4, 4), torch.rand(1, 4, 4)
    corr_q2, corr_s2 = correlate(prob_q, prob_s)
    torch.testing.assert_close(corr_q2[0][:, 0], _naive_corr(q[6], s[6] * prob_s[:, None]))
    torch.testing.assert_close(corr_s2[1][:, 2], _naive_corr(s[5], q[5] * prob_q[:, None]))


def test_masking_modes_leave_the_features_untouched():
    q, s = _tiny_feats(0), _tiny_feats(1)
    before = [f.clone() for f in q + s]
    for mode in MASKING_MODES.values():
        correlate = mode(q, s, bb.get_spec("vgg16").group_sizes)
        for _ in range(3):
            correlate(torch.rand(1, 4, 4), torch.rand(1, 4, 4))
    assert all(torch.equal(a, b) for a, b in zip(before, q + s))


def test_masks_are_resized_to_each_feature():
    """A (1, 2, 2) mask on (4, 4) and (2, 2) features: bilinear align_corners resize."""
    from model.masking import mask_features

    feats = [torch.ones(1, 1, 4, 4), torch.ones(1, 1, 2, 2)]
    mask = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    out = mask_features(feats, mask)
    torch.testing.assert_close(out[1][0, 0], mask[0])
    torch.testing.assert_close(out[0][0, 0, 0], torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]))


def test_paper_mode_forward_runs():
    model = build_model("vgg16", backbone_weights="none", masking="paper")
    with torch.no_grad():
        _, _, loss = model.train_mode()(**_episode(1, 64), stage=2)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="masking"):
        build_model("vgg16", backbone_weights="none", masking="nope")


def test_multilayer_correlation_groups():
    feats = _tiny_feats(2)
    pyramid = multilayer_correlation(feats, feats, (3, 3, 1))
    assert [p.shape[1] for p in pyramid] == [1, 3, 3]
    torch.testing.assert_close(pyramid[0][:, 0], _naive_corr(feats[6], feats[6]))


# ---------------------------------------------------------------- center-pivot 4D conv
def test_conv4d_matches_naive_definition():
    torch.manual_seed(0)
    conv = CenterPivotConv4d(2, 3, (3, 3, 3, 3), (1, 1, 2, 2), (1, 1, 1, 1))
    x = torch.randn(1, 2, 4, 5, 5, 3)
    y = conv(x)
    assert y.shape == (1, 3, 4, 5, 3, 2)
    expect = torch.empty_like(y)
    for i in range(4):
        for j in range(5):
            expect[0, :, i, j] = conv.conv2(x[:, :, i, j])[0]  # support-dims conv at each query position
    for k in range(3):
        for m in range(2):
            expect[0, :, :, :, k, m] += conv.conv1(x[:, :, :, :, 2 * k, 2 * m])[0]  # pruned support positions
    torch.testing.assert_close(y, expect)


# ---------------------------------------------------------------- K-shot vote
class _FixedLogits(torch.nn.Module):
    """Stands in for the model's forward: shot k predicts foreground on the pixels in ``fg[k]``."""

    def __init__(self, fg: list[torch.Tensor]) -> None:
        super().__init__()
        self.fg, self.calls = fg, 0
        self.use_original_imgsize = False

    def forward(self, **kwargs):
        fg = self.fg[self.calls]
        self.calls += 1
        return torch.stack([1 - fg, fg], dim=1).float(), None


def test_predict_mask_nshot_vote():
    a = torch.tensor([[[1, 1, 0, 0]]])
    b = torch.tensor([[[1, 0, 1, 0]]])
    c = torch.tensor([[[1, 0, 0, 0]]])
    batch = {"query_img": None, "support_imgs": torch.zeros(1, 3), "support_cams": torch.zeros(1, 3),
             "query_cam": None}
    stub = _FixedLogits([a, b, c])
    pred = IMRHSNet.predict_mask_nshot(stub, batch, nshot=3, stage=1)
    # votes 3, 1, 1, 0; max 3 -> 1, 1/3, 1/3, 0 -> threshold 0.5
    assert torch.equal(pred, torch.tensor([[[1.0, 0.0, 0.0, 0.0]]]))
    stub = _FixedLogits([b])
    assert torch.equal(IMRHSNet.predict_mask_nshot(stub, batch, nshot=1, stage=1), b)
    stub = _FixedLogits([torch.zeros(1, 1, 4, dtype=torch.long)] * 2)  # no votes: max clamps to 1
    assert IMRHSNet.predict_mask_nshot(stub, batch, nshot=2, stage=1).sum() == 0


# ---------------------------------------------------------------- checkpoints
def test_load_released_format_state_dict(vgg, tmp_path):
    sd = {"module." + k: v.clone() + (0.5 if k == "state" else 0) for k, v in vgg.state_dict().items()}
    torch.save(sd, tmp_path / "best_model.pt")
    fresh = build_model("vgg16", backbone_weights="none")
    load_model_state(fresh, tmp_path / "best_model.pt")
    assert torch.equal(fresh.state, vgg.state + 0.5)
    assert set(fresh.state_dict()) == {k[len("module."):] for k in sd}
    assert detect_backbone(fresh.state_dict()) == "vgg16"


def test_wrong_checkpoints_fail_clearly(vgg, r50):
    with pytest.raises(CheckpointMismatchError, match="backbone 'resnet50' but the model is 'vgg16'"):
        load_model_state(vgg, {"module." + k: v for k, v in r50.state_dict().items()})
    sd = dict(vgg.state_dict())
    sd.pop("convz0.weight")
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError, match=r"missing keys: convz0\.weight.*unexpected keys: extra\.weight"):
        load_model_state(vgg, sd)
    sd = dict(vgg.state_dict())
    sd["state"] = torch.zeros(1, 128, 25, 25)
    with pytest.raises(CheckpointMismatchError, match=r"shape mismatches: state \(1, 128, 25, 25\)"):
        load_model_state(vgg, sd)


def test_state_dict_layout(vgg, r50):
    keys = set(vgg.state_dict())
    assert "hpn_learner.encoder_layer2.0.conv1.weight" in keys and "convh2.bias" in keys
    assert not any(k.startswith(("hpn_learner.decoder", "conv1024_512")) for k in keys)
    assert r50.state_dict()["conv1024_512.weight"].shape == (512, 1024, 1, 1)
    assert vgg.state_dict()["state"].shape == (1, 128, 50, 50)


# ---------------------------------------------------------------- backbone weights
def test_imagenet_offline_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(FileNotFoundError, match=r"resnet50-19c8e357\.pth.*hub/checkpoints"):
        bb.build_backbone("resnet50", "imagenet")


def test_backbone_weights_from_local_file_and_hub_cache(tmp_path, monkeypatch):
    torch.manual_seed(1)
    state = bb.get_spec("resnet50").build().state_dict()
    path = tmp_path / "hub" / "checkpoints" / "resnet50-19c8e357.pth"
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    loaded = bb.build_backbone("resnet50", path)
    assert torch.equal(loaded.conv1.weight, state["conv1.weight"])
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert torch.equal(bb.build_backbone("resnet50", "imagenet").fc.weight, state["fc.weight"])
    with pytest.raises(FileNotFoundError, match="not found"):
        bb.build_backbone("resnet50", tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="unknown backbone"):
        bb.build_backbone("vgg19", "none")


def test_autocast_bfloat16_cpu(vgg):
    """No dtype assumptions: the forward runs under CPU bf16 autocast."""
    vgg.eval()
    ev = {k: v for k, v in _episode(1, 64).items() if not k.endswith("_mask")}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        lq, _ = vgg(**ev, stage=2)
    assert lq.shape == (1, 2, 64, 64) and torch.isfinite(lq.float()).all()


@pytest.mark.cuda
def test_cuda_matches_cpu(vgg):
    ev = {k: v for k, v in _episode(1, 64).items() if not k.endswith("_mask")}
    vgg.eval()
    with torch.no_grad():
        cpu, _ = vgg(**ev, stage=2)
        gpu_model = build_model("vgg16", backbone_weights="none").cuda()
        load_model_state(gpu_model, vgg.state_dict())
        gpu, _ = gpu_model.eval()(**{k: v.cuda() for k, v in ev.items()}, stage=2)
        with torch.autocast("cuda", dtype=torch.float16):
            half, _ = gpu_model(**{k: v.cuda() for k, v in ev.items()}, stage=2)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-3, rtol=1e-3)
    assert torch.isfinite(half).all()


@pytest.mark.slow
def test_compiled_learner_matches_and_keeps_the_checkpoint_keys():
    """--compile: torch.compile (inductor, on the CPU here) of the 4D-conv learner gives the eager outputs and
    leaves the state-dict keys, hence the released checkpoint format, unchanged."""
    torch.manual_seed(0)
    model = build_model("vgg16", backbone_weights="none").eval()
    args = dict(query_img=torch.randn(1, 3, 64, 64), support_img=torch.randn(1, 3, 64, 64),
                support_cam=torch.rand(1, 8, 8), query_cam=torch.rand(1, 8, 8), stage=2)
    keys = list(model.state_dict())
    with torch.no_grad():
        eager = model(**args)
        compiled = model.compile_learner()(**args)
    assert list(model.state_dict()) == keys
    for ours, ref in zip(compiled, eager):
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_compiled_learner_trains_in_one_graph_per_input_kind():
    """--compile while training (the recompute scope's saved-tensor hooks active): the learner is traced without
    graph breaks and recompiled only for its input kinds (stage 1/2 gradients, query/support layouts), far
    under Dynamo's recompile limit. Found on an H200: storage addresses in the copy and hook code broke the
    graph and hit the limit, so most of the learner ran eagerly. Traced with the "eager" backend: fast here."""
    import torch._dynamo as dynamo

    torch.manual_seed(0)
    model = build_model("vgg16", backbone_weights="none").train()
    model.compile_learner(backend="eager")
    dynamo.reset()
    dynamo.utils.counters.clear()
    eager_model = build_model("vgg16", backbone_weights="none").train()
    load_model_state(eager_model, model.state_dict())
    batch = dict(query_img=torch.randn(1, 3, 64, 64), support_img=torch.randn(1, 3, 64, 64),
                 support_cam=torch.rand(1, 8, 8), query_cam=torch.rand(1, 8, 8), stage=2)
    try:
        for _ in range(2):
            logits = model(**batch)[0]
            logits.float().mean().backward()
        reference = eager_model(**batch)[0]
    finally:
        graph_breaks = sum(dynamo.utils.counters["graph_break"].values())
        graphs = dynamo.utils.counters["stats"]["unique_graphs"]
        dynamo.reset()
    assert graph_breaks == 0, dict(dynamo.utils.counters["graph_break"])
    assert 1 <= graphs <= 6
    torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)
