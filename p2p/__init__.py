"""p2p: paired image-to-image translation (pix2pix, Isola et al., CVPR 2017)."""

__version__ = "0.1.0"
