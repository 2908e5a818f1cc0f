"""Choose a reader/writer by file ending, or by the name given in ``dataset.json``."""

from __future__ import annotations

from uadnet.imageio.base_reader_writer import BaseReaderWriter
from uadnet.imageio.natural_image_reader_writer import NaturalImage2DIO
from uadnet.imageio.simpleitk_reader_writer import SimpleITKIO

READER_WRITERS: dict[str, type[BaseReaderWriter]] = {
    "SimpleITKIO": SimpleITKIO,
    "NaturalImage2DIO": NaturalImage2DIO,
}
# nnU-Net names whose files SimpleITK reads and writes with the same geometry
ALIASES = {"NibabelIO": "SimpleITKIO", "NibabelIOWithReorient": "SimpleITKIO"}


def register_reader_writer(cls: type[BaseReaderWriter]) -> type[BaseReaderWriter]:
    """Add a reader/writer (usable as a class decorator); later registrations win for shared endings."""
    READER_WRITERS.pop(cls.__name__, None)  # re-registering a name moves it to the end, so it wins too
    READER_WRITERS[cls.__name__] = cls
    return cls


def reader_writer_class(file_ending: str, override: str | None = None) -> type[BaseReaderWriter]:
    """The class for ``file_ending`` (e.g. ``".nii.gz"``), or the one named by ``override``."""
    if override:
        name = ALIASES.get(override, override)
        if name not in READER_WRITERS:
            raise ValueError(f"dataset.json names overwrite_image_reader_writer='{override}', which uadnet does not "
                             f"know. Choose one of {sorted(READER_WRITERS)} or remove the key.")
        return READER_WRITERS[name]
    for cls in reversed(list(READER_WRITERS.values())):
        if cls.handles(file_ending):
            return cls
    endings = sorted({e for c in READER_WRITERS.values() for e in c.supported_file_endings})
    raise ValueError(f"no reader for file ending '{file_ending}'. Supported: {', '.join(endings)}; "
                     "convert the images or register a reader (uadnet.imageio.register_reader_writer).")


def reader_writer_for(file_ending: str, override: str | None = None) -> BaseReaderWriter:
    return reader_writer_class(file_ending, override)()
