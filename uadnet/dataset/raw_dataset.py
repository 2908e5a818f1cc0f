"""List the cases of a raw dataset folder (nnU-Net layout; ``labelsTr/`` of nnU-Net datasets is ignored).

::

    DatasetXXX_Name/dataset.json
                    imagesTr/<case>_<cccc><ending>   healthy training cases, one file per channel (or one
                                                     <case>_0000 file holding all channels, e.g. RGB photos)
                    masksTr/<case><ending>           optional foreground masks
                    imagesTs/<case>_<cccc><ending>   optional test cases
                    labelsTs/<case><ending>          optional anomaly labels (evaluation only)
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uadnet.dataset.dataset_json import load_dataset_json
from uadnet.imageio import BaseReaderWriter, reader_writer_for


@dataclass
class Case:
    """One case: its channel files (sorted by channel index) and an optional mask/label file."""

    identifier: str
    images: list[Path]
    channel_indices: list[int]
    mask: Path | None = None


def one_file_holds_all_channels(channel_indices: Sequence[int], num_channels: int) -> bool:
    """Whether a case with these channel file indices is stored as one ``_0000`` file holding all ``num_channels``
    channels (an RGB photograph); its channel count is checked once read (``check_read_channels``)."""
    return num_channels > 1 and list(channel_indices) == [0]


def channel_files_problem(case: Case, channel_names: dict[str, str], file_ending: str) -> str | None:
    """Why the case's channel files do not fit ``channel_names``, or ``None``.

    The one notion of a case's channels shared by integrity check, preprocessing, prediction and baselines: files
    ``_0000 … _{n-1}`` with one channel each, or (n > 1) a single ``_0000`` file holding all n channels (an RGB
    photograph). How many channels a file holds is known only after reading: see ``check_read_channels``.
    """
    n = len(channel_names)
    if list(case.channel_indices) == list(range(n)) or one_file_holds_all_channels(case.channel_indices, n):
        return None
    found = ", ".join(f"{i:04d}" for i in case.channel_indices)
    return (f"case {case.identifier} has channel file(s) {found}; expected {n} channel(s) "
            f"({', '.join(channel_names.values())}) as {case.identifier}_0000{file_ending} … "
            f"{case.identifier}_{n - 1:04d}{file_ending}" + (f", or one {case.identifier}_0000{file_ending} "
                                                             f"holding all {n}" if n > 1 else ""))


def check_read_channels(case: Case, image: Any, channel_names: dict[str, str]) -> None:
    """``ValueError`` naming the file unless the image read from ``case.images`` (``(c, z, y, x)``) has exactly
    one channel per entry of ``channel_names``."""
    n = len(channel_names)
    if image.shape[0] != n:
        files = ", ".join(p.name for p in case.images)
        raise ValueError(f"{files}: {image.shape[0]} channel(s) read, but dataset.json channel_names lists {n} "
                         f"({', '.join(channel_names.values())}); store one channel per file, or one file holding "
                         "exactly those channels (an RGB photograph for R, G, B)")


@dataclass
class CaseListing:
    cases: dict[str, Case] = field(default_factory=dict)
    unmatched: list[Path] = field(default_factory=list)  # files whose names do not follow <case>_<cccc><ending>
    orphan_masks: list[Path] = field(default_factory=list)  # masks without an image


def _entries(folder: Path, file_ending: str) -> list[Path]:
    # DICOM series may be folders named like files ("case_0000.dcm/")
    return sorted(p for p in folder.iterdir() if p.name.lower().endswith(file_ending.lower())
                  and not p.name.startswith("."))


def list_cases(images_folder: str | os.PathLike, file_ending: str,
               masks_folder: str | os.PathLike | None = None) -> CaseListing:
    """Group ``images_folder``'s files into cases; attach ``masks_folder/<case><ending>`` when present."""
    images_folder = Path(images_folder)
    listing = CaseListing()
    if not images_folder.is_dir():
        return listing
    pattern = re.compile(r"^(.+)_(\d{4})" + re.escape(file_ending) + r"$", re.IGNORECASE)
    for p in _entries(images_folder, file_ending):
        m = pattern.match(p.name)
        if not m:
            listing.unmatched.append(p)
            continue
        case = listing.cases.setdefault(m.group(1), Case(m.group(1), [], []))
        case.images.append(p)
        case.channel_indices.append(int(m.group(2)))
    for case in listing.cases.values():
        order = sorted(range(len(case.images)), key=lambda i: case.channel_indices[i])
        case.images = [case.images[i] for i in order]
        case.channel_indices = [case.channel_indices[i] for i in order]
    if masks_folder is not None and Path(masks_folder).is_dir():
        for p in _entries(Path(masks_folder), file_ending):
            ident = p.name[: -len(file_ending)]
            if ident in listing.cases:
                listing.cases[ident].mask = p
            else:
                listing.orphan_masks.append(p)
    listing.cases = dict(sorted(listing.cases.items()))
    return listing


class RawDataset:
    """A raw dataset folder with its validated ``dataset.json``."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"dataset folder {self.folder} does not exist.")
        self.dataset_json: dict[str, Any] = load_dataset_json(self.folder)
        self.file_ending: str = self.dataset_json["file_ending"]
        self.channel_names: dict[str, str] = self.dataset_json["channel_names"]

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    def reader_writer(self) -> BaseReaderWriter:
        return reader_writer_for(self.file_ending, self.dataset_json.get("overwrite_image_reader_writer"))

    def training_listing(self) -> CaseListing:
        return list_cases(self.folder / "imagesTr", self.file_ending, self.folder / "masksTr")

    def test_listing(self) -> CaseListing:
        return list_cases(self.folder / "imagesTs", self.file_ending, self.folder / "labelsTs")

    def training_cases(self) -> dict[str, Case]:
        cases = self.training_listing().cases
        if not cases:
            raise FileNotFoundError(f"{self.folder / 'imagesTr'} holds no files named <case>_0000"
                                    f"{self.file_ending}. See documentation/dataset_format.md.")
        return cases
