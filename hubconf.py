"""torch.hub entry point: ``torch.hub.load(REPO_DIR, "adasim_backbone", path=EXPORT_DIR,
source="local")`` rebuilds a backbone written by ``launch.py export``."""

dependencies = ["torch", "timm", "safetensors"]


def adasim_backbone(path: str, map_location: str = "cpu"):
    """The exported backbone in ``path`` (``backbone.safetensors`` + ``config.json``)."""
    from adasim_ray.export import load_backbone

    return load_backbone(path, map_location)
