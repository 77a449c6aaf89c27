"""Stub of torchvision.transforms: importable, unusable (see the package docstring)."""


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)

    def _unavailable(*args, **kwargs):
        raise ImportError(f"torchvision.transforms.{name} is not available in the Self-Cascade test host")

    return _unavailable
