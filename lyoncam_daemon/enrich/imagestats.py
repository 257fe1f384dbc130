"""`brightness` and `contrast` of each frame, computed by the dedup decode (dedup.Looks).

Mean and standard deviation (0-255) of the reduced grayscale the fingerprint was made
from: free at capture time, and enough to find the dark, washed-out or glared frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from lyoncam_daemon.config import CameraConfig
from lyoncam_daemon.frames.judge import Verdict


class ImageStatsEnricher:
    name = "imagestats"

    async def __call__(self, camera: CameraConfig, captured_at: datetime,
                       verdict: Verdict) -> Mapping[str, Any]:
        if verdict.brightness is None or verdict.contrast is None:
            return {}
        return {"brightness": verdict.brightness, "contrast": verdict.contrast}
