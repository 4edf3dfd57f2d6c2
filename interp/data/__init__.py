"""Data: image files, the skimage.data photos, PartsWorld, dataset specs."""

from .images import load_image, to_input
from .natural import PHOTO_NAMES, load_photo, save_photos
from .partsworld import PartsWorld, Sample
from .specs import DatasetUnavailableError, DataSplits, load_data

__all__ = [
    "PHOTO_NAMES",
    "DataSplits",
    "DatasetUnavailableError",
    "PartsWorld",
    "Sample",
    "load_data",
    "load_image",
    "load_photo",
    "save_photos",
    "to_input",
]
