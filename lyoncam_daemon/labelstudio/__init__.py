"""Label Studio: pull a labelled project back as a YOLO dataset (and push frames to label)."""
