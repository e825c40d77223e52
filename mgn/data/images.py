"""Reading images: a torch ``Dataset`` over records, and a check of every file before training."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from PIL import Image, UnidentifiedImageError

from mgn.config import ImageCheck
from mgn.data.records import DatasetError, ImageRecord


class CorruptImageError(DatasetError):
    """An image file cannot be decoded; ``path`` and ``reason`` let a caller give its own advice."""

    def __init__(self, message: str, path: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.path, self.reason = path, reason


def load_image(path: str) -> Image.Image:
    """Decode an RGB image, or raise ``CorruptImageError`` naming the file."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # convert() forces a full decode, catching truncation
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as error:
        raise CorruptImageError(
            f"cannot read image {path}: {error}. Replace the file, or set data.skip_bad_images=true",
            path=path,
            reason=str(error),
        ) from None


def _problem(path: str, check: ImageCheck) -> str | None:
    try:
        if check is ImageCheck.DECODE:
            load_image(path)
        else:
            with Image.open(path) as image:
                image.verify()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        return f"{path}: {error}"
    return None


def check_images(
    records: Sequence[ImageRecord], check: ImageCheck, skip_bad: bool, split: str, workers: int = 4
) -> list[ImageRecord]:
    """Open every image once before any compute; fail listing bad files, or drop them with a count."""
    if check is ImageCheck.NONE or not records:
        return list(records)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decoding releases the GIL
        problems = list(pool.map(lambda r: _problem(r.path, check), records))
    bad = [p for p in problems if p is not None]
    if not bad:
        return list(records)
    if not skip_bad:
        shown = "\n  ".join(bad[:5])
        raise CorruptImageError(
            f"{len(bad)} of {len(records)} {split} images cannot be read:\n  {shown}\n"
            f"Replace them, or set data.skip_bad_images=true to leave them out (they are then counted)."
        )
    warnings.warn(
        f"skipped {len(bad)} unreadable {split} images (data.skip_bad_images=true), e.g. {bad[0]}",
        stacklevel=2,
    )
    return [r for r, p in zip(records, problems, strict=True) if p is None]


class ImageDataset(torch.utils.data.Dataset[tuple[torch.Tensor, int, int]]):
    """Records -> (image tensor (3, H, W), pid, camid).

    With ``cache`` the decoded images are kept in memory after first use (small data sets such as
    the synthetic one: decoding would otherwise cost ~20% of a CPU training epoch).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        transform: Callable[[Image.Image], torch.Tensor],
        cache: bool = False,
    ) -> None:
        self.records = list(records)
        self.transform = transform
        self._cache: dict[int, Image.Image] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        record = self.records[index]
        image = None if self._cache is None else self._cache.get(index)
        if image is None:
            image = load_image(record.path)
            if self._cache is not None:
                self._cache[index] = image
        return self.transform(image), record.pid, record.camid
