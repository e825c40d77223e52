"""Re-ID data: Market-1501, DukeMTMC-reID, CUHK03-NP, your own folders, and the embedded synthetic set."""

from mgn.data.images import CorruptImageError, ImageDataset
from mgn.data.loading import eval_loader, load_dataset, read_dataset, train_loader
from mgn.data.records import DatasetError, ImageRecord, ReidDataset, pids_and_camids
from mgn.data.sampler import PKBatchSampler

__all__ = [
    "CorruptImageError",
    "DatasetError",
    "ImageDataset",
    "ImageRecord",
    "PKBatchSampler",
    "ReidDataset",
    "eval_loader",
    "load_dataset",
    "pids_and_camids",
    "read_dataset",
    "train_loader",
]
