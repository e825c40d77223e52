"""Every image's tensor before augmentation: bicubic resize to the input size, ImageNet normalisation.

Training images are then flipped and erased as ``mgn.data.augment`` draws them."""

from __future__ import annotations

import torchvision.transforms as T

from mgn.config import DataConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def input_transform(config: DataConfig) -> T.Compose:
    """PIL image -> normalised (3, H, W): the test images, and the training images before augmentation."""
    return T.Compose(
        [
            T.Resize((config.height, config.width), interpolation=T.InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
