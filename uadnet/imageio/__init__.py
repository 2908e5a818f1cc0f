"""Readers/writers: one interface (``BaseReaderWriter``), chosen by file ending through a registry."""

from uadnet.imageio.base_reader_writer import DUMMY_SLICE_SPACING, BaseReaderWriter, ImageReadError, require_finite
from uadnet.imageio.natural_image_reader_writer import NaturalImage2DIO
from uadnet.imageio.reader_writer_registry import (
    READER_WRITERS,
    reader_writer_class,
    reader_writer_for,
    register_reader_writer,
)
from uadnet.imageio.simpleitk_reader_writer import SimpleITKIO

__all__ = [
    "DUMMY_SLICE_SPACING",
    "READER_WRITERS",
    "BaseReaderWriter",
    "ImageReadError",
    "NaturalImage2DIO",
    "SimpleITKIO",
    "reader_writer_class",
    "reader_writer_for",
    "register_reader_writer",
    "require_finite",
]
