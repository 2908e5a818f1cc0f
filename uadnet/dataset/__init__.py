"""The raw dataset folder: ``dataset.json``, case listing and the integrity check."""
