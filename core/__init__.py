"""Partial-convolution inpainting: layer, U-Net, losses, masks, training and inference."""

__version__ = "0.1.0"
