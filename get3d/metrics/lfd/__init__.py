"""Light Field Distance (Chen et al. 2003) in PyTorch, batched over silhouettes and mesh pairs.

Modules: :mod:`.render` (silhouettes), :mod:`.reference` (ports of the original program's steps), :mod:`.fast`
(the batched path, same codes), :mod:`.descriptors` (silhouettes/meshes -> descriptors), :mod:`.matching`
(distances); :mod:`.core` holds what they share.

Per mesh (see docs/lfd-validation.md for the comparison with the original C program):

1. centre the bounding box at the origin, scale the largest side to 1;
2. render 10 light fields x 10 orthographic silhouettes of 256x256: cameras on the first 10 vertices of 10
   rotated dodecahedra (radius 1.0705, looking at the origin, up +y, ortho box [-1,1]^2, depth [0,2]);
   the other 10 vertices of each dodecahedron are antipodal (mirror silhouettes) and are not rendered;
3. per silhouette (row 0 = bottom, as OpenGL reads back) with centre = middle of its pixel bounding box:
   - 35 ART magnitudes (angular p < 12, radial r < 3, MPEG-7 order: p=0 r=1,2 then p=1..11 r=0..2), basis
     cos(pi r rho) e^{-i p theta} sampled on a 101x101 lookup table (radius 50) with bilinear interpolation,
     pixel coordinates scaled so the farthest silhouette pixel of the light field's 10 views lies at rho=1,
     averaged over pixels and divided by the (0,0) coefficient;
   - 10 Fourier descriptors: |X_k|/|X_0|, k=1..10, of the centroid-distance signal along the traced outer
     contour (square tracing; multi-part silhouettes are first merged by 3x3, then 5x5 dilation, then their
     bounding box, followed by topology-preserving thinning back inside the silhouette);
   - circularity 4 pi A / P^2 (P = pixels with a background 8-neighbour), clipped to 1;
   - eccentricity ((m20-m02)^2 + 4 m11^2) / (m20+m02)^2 of second moments about the centre, clipped to 1;
   each quantized as min(floor(256 * value), 255) (Fourier descriptors: 256 * 2 * value);
4. view distance = sum|d art| + 2 sum|d fd| + 2|d circ| + |d ecc| (on the 8-bit codes);
   light-field distance = min over the 60 rotations of the dodecahedron of the sum over the 10 views;
   LFD = min over the 10 x 10 light-field pairs.
"""
from .core import DESC_DIM, RES, LFDDescriptor, alignment_table, camera_positions
from .descriptors import descriptors_from_silhouettes, fourier_descriptors, is_multi_part, mesh_descriptors
from .matching import lfd, lfd_matrix
from .render import normalize_mesh, render_meshes_silhouettes, render_silhouettes

__all__ = ["DESC_DIM", "RES", "LFDDescriptor", "alignment_table", "camera_positions", "descriptors_from_silhouettes",
           "fourier_descriptors", "is_multi_part", "lfd", "lfd_matrix", "mesh_descriptors", "normalize_mesh",
           "render_meshes_silhouettes", "render_silhouettes"]
