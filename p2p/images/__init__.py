"""The one image reader and writer, in three modules: ``files`` (which files are images, and the
checks every read passes: regular files, an allow-list of formats, sizes from headers before
anything is allocated), ``eight_bit`` (8-bit RGB and gray through Pillow) and ``raster`` (pixels
at any depth and channel count: 16-bit PNG, TIFF, ``.npy``)."""
