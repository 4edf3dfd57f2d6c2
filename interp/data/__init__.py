"""Data: image files, the photos shipped in ``skimage.data``."""

from .images import load_image, to_input
from .natural import PHOTO_NAMES, load_photo, save_photos

__all__ = ["PHOTO_NAMES", "load_image", "load_photo", "save_photos", "to_input"]
