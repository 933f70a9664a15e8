"""Where rtlm keeps its cache (converted models): ``$RTLM_HOME`` or the user cache directory."""

from __future__ import annotations

import os
from pathlib import Path


def rtlm_home() -> Path:
    env = os.environ.get("RTLM_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("rtlm"))
