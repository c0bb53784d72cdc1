"""One optimizer step from the same weights and batch moves the parameters as the released model's step does.

tests/golden/step_released.pt was measured by running the released IMR-HSNet code (``model/hsnet_imr.py``,
imported with the two shims of ``benchmarks/bench_model.py``) on this repository's CPU, torch 2.14.1: VGG16,
400 px, batch 1, stage 2, weights ``random_state_dict(seed 5)`` and inputs ``make_inputs(seed 7)`` of
``tests/model_golden_inputs.py``, one ``torch.optim.Adam`` step (lr 4e-4, the released default) over every
parameter but the frozen backbone. Stored per parameter: the values after the step at up to 256 evenly spaced
positions, and two float64 checksums of the whole update (its sum and its alternating sum).

Adam's first step moves each parameter by about lr * sign(gradient), so a gradient whose sign flips moves it by
up to 2 lr = 8e-4: the checksums catch one such element anywhere (tolerance 1e-4; measured: 2.6e-6), the samples
are held to the issue's 1e-5 (measured: 1.5e-6).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model import build_model
from tests.model_golden_inputs import make_inputs, random_state_dict

GOLDEN = Path(__file__).resolve().parent / "golden" / "step_released.pt"
SAMPLE_TOL = 1e-5
CHECKSUM_TOL = 1e-4


def sample_index(numel: int) -> torch.Tensor:
    """The positions stored in the golden file: up to 256, evenly spaced."""
    return torch.linspace(0, numel - 1, min(numel, 256)).round().long().unique()


@pytest.fixture(scope="module")
def golden() -> dict:
    return torch.load(GOLDEN, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def model(golden) -> torch.nn.Module:
    return build_model(golden["backbone"], backbone_weights="none")


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint_learner", [False, True], ids=["default", "checkpoint-learner"])
def test_one_adam_step_moves_the_parameters_as_the_released_step(model, golden, checkpoint_learner):
    start = random_state_dict(model.state_dict(), golden["weight_seed"])
    model.load_state_dict(start)
    model.checkpoint_learner = checkpoint_learner
    model.backbone.requires_grad_(False)
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert params.keys() == golden["params"].keys()
    optimizer = torch.optim.Adam(params.values(), lr=golden["lr"])
    batch = make_inputs(golden["input_seed"], bsz=golden["bsz"])
    _, _, loss = model.train_mode()(
        query_img=batch["query_img"], support_img=batch["support_imgs"][:, 0],
        support_cam=batch["support_cams"][:, 0], query_cam=batch["query_cam"], query_mask=batch["query_mask"],
        support_mask=batch["support_masks"][:, 0], stage=golden["stage"])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    model.checkpoint_learner = False

    assert loss.item() == pytest.approx(golden["loss"], abs=1e-5)
    for name, param in params.items():
        expected = golden["params"][name]
        after = param.detach().flatten()
        torch.testing.assert_close(after[sample_index(after.numel())], expected["value"], rtol=0, atol=SAMPLE_TOL,
                                   msg=lambda msg, name=name: f"{name}: {msg}")
        delta = after.double() - start[name].flatten().double()
        assert delta.sum().item() == pytest.approx(expected["sum"], abs=CHECKSUM_TOL), name
        alternating = (delta[0::2].sum() - delta[1::2].sum()).item()
        assert alternating == pytest.approx(expected["alternating"], abs=CHECKSUM_TOL), name
