"""Image transforms: resize, the paper's random flip (§4.1), optional random erasing, ImageNet normalisation."""

from __future__ import annotations

import torchvision.transforms as T

from mgn.config import DataConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def train_transform(config: DataConfig) -> T.Compose:
    steps: list = [T.Resize((config.height, config.width), interpolation=T.InterpolationMode.BICUBIC)]
    if config.random_flip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if config.random_erasing > 0:
        # Erased pixels are set to 0 after normalisation, i.e. the ImageNet mean colour.
        steps.append(T.RandomErasing(p=config.random_erasing, value=0))
    return T.Compose(steps)


def test_transform(config: DataConfig) -> T.Compose:
    return T.Compose(
        [
            T.Resize((config.height, config.width), interpolation=T.InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
