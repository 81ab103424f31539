"""Velocity networks for flowup."""

from flowup.models.flow_unet import FlowUNet, PixelGroupNorm

__all__ = ["FlowUNet", "PixelGroupNorm"]
