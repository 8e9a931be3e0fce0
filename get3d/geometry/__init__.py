"""Iso-surface extraction for GET3D: tetrahedral grids + DMTet, FlexiCubes, and mesh helpers."""
from .dmtet import (
                    SDF_REG_WEIGHT,
                    deform_vertices,
                    dmtet_extract,
                    empty_shape_guard,
                    marching_tets,
                    sdf_reg_loss,
)
from .flexicubes import CubeGrid, flexicubes_extract, make_cube_grid, weights_from_features
from .mesh import Mesh, euler_characteristic, is_watertight, mesh_area, signed_volume, unique_edges
from .tetgrid import TetGrid, build_tet_grid_arrays, load_tet_grid

__all__ = [
                    "SDF_REG_WEIGHT",
                    "CubeGrid",
                    "Mesh",
                    "TetGrid",
                    "build_tet_grid_arrays",
                    "deform_vertices",
                    "dmtet_extract",
                    "empty_shape_guard",
                    "euler_characteristic",
                    "flexicubes_extract",
                    "is_watertight",
                    "load_tet_grid",
                    "make_cube_grid",
                    "marching_tets",
                    "mesh_area",
                    "sdf_reg_loss",
                    "signed_volume",
                    "unique_edges",
                    "weights_from_features",
]
