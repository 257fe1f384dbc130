"""Pull a Label Studio project into a YOLO dataset ultralytics can train on, resumably.

Layout of the output directory::

    images/{train,val}/<stem>.<ext>   labels/{train,val}/<stem>.txt   data.yaml   classes.txt
    images/unlabelled/<stem>.<ext>    (only with --include-unlabelled; not in data.yaml)
    .lyoncam-pull.json                (manifest: where each file came from, its SHA-256)

Each run plans the whole dataset from the tasks API first (plan.py, pure), then makes the disk
match (sync.py): files already present and unchanged are kept, files whose split changed are
moved, missing images are downloaded (decode-checked, written atomically), files of tasks that
vanished are removed. Only files listed in the manifest (manifest.py) are ever moved or removed.
The disk work runs in worker threads (disk.py); run.py strings the steps together.
"""

from lyoncam_daemon.labelstudio.pull.model import (
    ImageResult,
    Item,
    PullError,
    PullOptions,
    Summary,
)
from lyoncam_daemon.labelstudio.pull.run import run_pull
from lyoncam_daemon.labelstudio.pull.sync import NoProgress, Progress

__all__ = [
    "ImageResult",
    "Item",
    "NoProgress",
    "Progress",
    "PullError",
    "PullOptions",
    "Summary",
    "run_pull",
]
