"""Restorer networks: the conditional UNet (2D/3D, topology from the plans) and its condition embedding."""

from uadnet.networks.embeddings import ConditionEmbedding, sinusoidal_embedding
from uadnet.networks.unet import ConditionalUNet

__all__ = ["ConditionEmbedding", "ConditionalUNet", "sinusoidal_embedding"]
