"""The demo dataset: healthy brains and lesions made from the MNI152 template that ships inside nilearn."""
