"""The parity numbers of the README's Results section: how far our outputs are from the released code's.

    python benchmarks/parity_report.py --released-repo /path/to/IMR-HSNet   # model: ours vs the released model
    python benchmarks/parity_report.py                                      # CAMs and golden subsamples only

* **CAM priors**: our CAMs of the pairs in ``tests/golden/cam_released_*.pt`` (files the released
  ``generate_cam_*.py`` procedure wrote on the CPU for seeded random CLIP weights) against those files: the
  max abs difference per golden file (the tests assert <= 1e-3).
* **Model**: every entry of ``tests/golden/model_golden.pt`` (seeded random weights and inputs at 400 px,
  fp32, CPU): training-mode forward with masks (logits and loss), eval forward (logits) and the 5-shot vote,
  per backbone and stage. With ``--released-repo`` the released model (imported as ``bench_model.py`` does,
  no change to its files) runs on the same weights and inputs and the max abs difference of the *full*
  outputs is printed; always, our outputs are compared with the subsamples stored in the golden file.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_model import import_released  # noqa: E402
from data.benchmarks import CLASS_NAMES  # noqa: E402
from model import build_model  # noqa: E402
from priors.recipes import clip_gradcam as cg  # noqa: E402
from model.checkpoint import load_model_state  # noqa: E402
from tests.model_golden_inputs import make_inputs, random_state_dict  # noqa: E402

GOLDEN = REPO / "tests" / "golden"
CAM_GOLDENS = (("cam_released_tiny.pt", "fp32"), ("cam_released_tiny_fp16.pt", "fp16"),
               ("cam_released_rn50.pt", "fp32"))


def cam_report() -> None:
    """Max abs difference of our CAMs to each golden file of the released CAM procedure."""
    from PIL import Image

    for name, precision in CAM_GOLDENS:
        golden = torch.load(GOLDEN / name, map_location="cpu", weights_only=True)
        state = cg.random_clip_state_dict(golden["seed"], **golden["clip_config"])
        model = cg.build_clip_from_state_dict(state, precision=precision)
        worst, pairs = 0.0, []
        for benchmark in ("pascal", "coco"):
            rows = [i for i, b in enumerate(golden["benchmark"]) if b == benchmark]
            if not rows:
                continue
            images = [Image.open(io.BytesIO(golden["images"][golden["image"][i]].numpy().tobytes())) for i in rows]
            ours = cg.compute_cams(model, images, [golden["class_idx"][i] for i in rows], CLASS_NAMES[benchmark],
                                   cam_size=golden["cam_size"])
            worst = max(worst, (ours - golden["cams"][rows]).abs().max().item())
            pairs.append(f"{len(rows)} {benchmark}")
        print(f"CAM {name} ({precision}, {' + '.join(pairs)} pairs): max abs difference {worst:.3g}", flush=True)


def _forward(model: torch.nn.Module, kind: str, entry: dict, stage: int) -> dict[str, torch.Tensor]:
    """The golden entry's computation on ``model`` (ours or the released one: same call signature)."""
    if kind == "vote5":
        model.eval()
        return {"vote": model.predict_mask_nshot(make_inputs(entry["input_seed"], bsz=1, nshot=5), nshot=5,
                                                 stage=stage).float()}
    b = make_inputs(entry["input_seed"], bsz=entry["bsz"])
    args = dict(query_img=b["query_img"], support_img=b["support_imgs"][:, 0], support_cam=b["support_cams"][:, 0],
                query_cam=b["query_cam"])
    if kind == "train":
        model.train_mode()
        q, s, loss = model(**args, query_mask=b["query_mask"], support_mask=b["support_masks"][:, 0], stage=stage)
        return {"logit_q": q, "logit_s": s, "loss": loss.reshape(1)}
    model.eval()
    q, s = model(**args, stage=stage)
    return {"logit_q": q, "logit_s": s}


@torch.no_grad()
def model_report(released_repo: Path | None) -> None:
    """Per golden entry: ours vs the golden subsamples and, with the released checkout, vs the released model."""
    golden = torch.load(GOLDEN / "model_golden.pt", map_location="cpu", weights_only=True)
    for backbone in ("vgg16", "resnet50"):
        ours = build_model(backbone, backbone_weights="none")
        state = random_state_dict(ours.state_dict(), golden[backbone]["weight_seed"])
        load_model_state(ours, {"module." + k: v for k, v in state.items()})
        released = None
        if released_repo is not None:
            released = import_released(released_repo, backbone)()
            released.load_state_dict(state)
        for key, entry in golden[backbone].items():
            if not isinstance(entry, dict):
                continue
            kind, stage = key.split("_s")
            out = _forward(ours, kind, entry, int(stage))
            if kind == "vote5":
                sub = (out["vote"][..., ::4, ::4].bool() != entry["vote"]).sum().item()
                line = f"vote pixels differing from the golden subsample: {sub}"
            else:
                sub = max((out[k][..., ::16, ::16] - entry[k]).abs().max().item() for k in ("logit_q", "logit_s"))
                line = f"max abs difference to the golden subsample {sub:.3g}"
            if released is not None:
                theirs = _forward(released, kind, entry, int(stage))
                diff = max((out[k] - theirs[k]).abs().max().item() for k in out)
                line += f" | to the released model's full outputs ({', '.join(out)}): {diff:.3g}"
            print(f"model {backbone} {key} (bsz {entry['bsz']}, 400 px): {line}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--released-repo", type=Path, default=os.environ.get("IMR_HSNET_RELEASED"),
                        help="checkout of the released IMR-HSNet (default: $IMR_HSNET_RELEASED)")
    parser.add_argument("--skip-cams", action="store_true", help="the model part only")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, CPU, fp32 unless stated")
    if not args.skip_cams:
        cam_report()
    model_report(Path(args.released_repo) if args.released_repo else None)


if __name__ == "__main__":
    main()
