"""Rasters and scenes: (Geo)TIFF reading, tiling large scenes, masks to polygons,
writers, the scene CLI's runner."""
