"""Episodes whose supports show another class: the control that the support decides what is segmented.

For test episode ``i`` (query ``q``, class ``c``), a donor episode of another class ``d`` is drawn with a
seeded generator among the test episodes whose class is not ``c`` and whose supports are not ``q`` and are
not listed under ``c`` (no support shows an object of ``c``). The model then sees ``q`` (with its
class-``c`` CAM) beside the donor's support images, their class-``d`` masks and class-``d`` CAMs, and the
prediction is scored against ``q``'s class-``c`` mask, under class ``c``. If the model segments what the
support shows, this mIoU falls far below the ordinary test's.

The query keeps its class-``c`` CAM because CAM files exist only for the classes an image is listed under (as
the released CAM scripts make them). With real CLIP weights that prior still points at class ``c``, so the
drop measured here is, if anything, smaller than with a fully swapped label.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from common.evaluation import IoUMeter
from data.fewshot import FewShotDataset
from engine.loops import PassResult, test_pass

_SUPPORT_KEYS = ("support_imgs", "support_masks", "support_names", "support_cams", "support_ignore_idxs")


def listed_classes(dataset: FewShotDataset) -> dict[str, set[int]]:
    """Each image of ``dataset``'s split lists -> the classes (of the fold's split) it is listed under."""
    listed: dict[str, set[int]] = {}
    for name, cls in dataset.img_metadata:
        listed.setdefault(name, set()).add(int(cls))
    return listed


class WrongSupportEpisodes(Dataset):
    """``dataset``'s test episodes, each with the supports of a test episode of another class."""

    def __init__(self, dataset: FewShotDataset, seed: int = 0) -> None:
        if dataset.episodes is None:
            raise ValueError("wrong-support episodes need a test dataset (split 'val' or 'test')")
        self.dataset = dataset
        if len({episode.class_id for episode in dataset.episodes}) < 2:
            raise ValueError("wrong-support episodes need test episodes of at least two classes")
        listed = listed_classes(dataset)
        rng = np.random.RandomState(seed)
        self.donors = []
        for episode in dataset.episodes:
            # a donor of another class whose supports show no object of the query's class and are not the query
            donors = [i for i, other in enumerate(dataset.episodes) if other.class_id != episode.class_id
                      and episode.query not in other.supports
                      and not any(episode.class_id in listed.get(name, ()) for name in other.supports)]
            if not donors:
                raise ValueError(f"no test episode of another class has supports without class "
                                 f"{episode.class_id} for the query {episode.query}")
            self.donors.append(int(donors[rng.randint(len(donors))]))

    def __len__(self) -> int:
        return len(self.dataset.episodes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        batch = self.dataset.load_episode(self.dataset.episodes[index])
        donor = self.dataset.load_episode(self.dataset.episodes[self.donors[index]])
        batch.update({key: donor[key] for key in _SUPPORT_KEYS if key in donor})
        batch["support_class_id"] = donor["class_id"]
        return batch


def wrong_support_test(model: torch.nn.Module, dataset: FewShotDataset, *, nshot: int, stage: int,
                       device: torch.device, bsz: int = 10, seed: int = 0) -> PassResult:
    """The released test pass over :class:`WrongSupportEpisodes` of ``dataset`` (mIoU of the queries' own
    classes while the supports show other classes)."""
    episodes = WrongSupportEpisodes(dataset, seed=seed)
    loader = torch.utils.data.DataLoader(episodes, batch_size=bsz, shuffle=False, num_workers=0)
    return test_pass(model, loader, IoUMeter.for_dataset(dataset, device), nshot=nshot, stage=stage, device=device,
                     log_every=0, progress=False)
