"""Where mpstudy keeps what it can recompute: fine-tuned baselines, teacher outputs, grid units."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir"]


def default_cache_dir() -> Path:
    """``$MPSTUDY_CACHE``, else ``~/.cache/mpstudy``."""
    return Path(os.environ.get("MPSTUDY_CACHE", Path.home() / ".cache" / "mpstudy"))
