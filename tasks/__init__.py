"""Thin Prefect tasks: each calls one get3d library function with paths (never tensors)."""
