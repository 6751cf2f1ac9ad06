"""FID and Inception Score with the protocol of the published pix2pix table (mmagic's TransFID
and TransIS, ``inception_style='PyTorch'``): the networks, the statistics, the table itself."""
