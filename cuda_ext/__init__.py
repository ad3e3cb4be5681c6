"""Custom CUDA volume-rendering kernels (placeholder until the cuda_ext issue lands)."""


def kernels_available(strict: bool = False) -> bool:
    """Whether the CUDA kernels can be used; ``strict`` raises instead of returning False."""
    if strict:
        raise RuntimeError("talk3d CUDA kernels are not built yet; use TALK3D_RENDER_IMPL=torch")
    return False
