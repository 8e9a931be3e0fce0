"""Textured mesh export: sampling a trained generator, UV atlases, baked textures, OBJ/GLB files, previews,
an offline gallery and the export FID (``get3d sample``, ``get3d export``)."""
