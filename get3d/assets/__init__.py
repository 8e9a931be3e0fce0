"""Asset sources: procedural category, ShapeNetCore v1/v2, RenderPeople-style folders, any folder of meshes."""
