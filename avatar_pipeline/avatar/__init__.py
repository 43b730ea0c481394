"""Avatars: the on-disk asset format, the content-addressed registry, the shipped default tutor
and photo registration."""

from avatar_pipeline.avatar.asset import AvatarAsset, AvatarError, Box, load_asset, save_asset
from avatar_pipeline.avatar.registry import AvatarRegistry, default_cache_dir

__all__ = ["AvatarAsset", "AvatarError", "AvatarRegistry", "Box", "default_cache_dir",
           "load_asset", "save_asset"]
