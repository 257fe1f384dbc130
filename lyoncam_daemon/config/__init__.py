"""The configuration: `cameras.yaml` read into validated, frozen models.

Lives here: the model and its loader (model.py: unknown keys are errors, every default is in
the model, errors are one line naming file, line, camera and field) and the shard rule
(shard.py: which cameras a process owns), because a config names its shard; the
configuration reference of the docs, generated from the model (reference.py); and the one
way to read a small file a setting names (files.py: bounded, regular files only).

May import: nothing else of lyoncam. Everything else imports this package, so it is the
ground floor; the names below are its public face.
"""

from lyoncam_daemon.config.model import (
    CAMERA_ID_RE,
    MAX_CONFIG_BYTES,
    MAX_DURATION_S,
    MIN_INTERVAL_S,
    CameraConfig,
    Config,
    ConfigError,
    DedupSettings,
    HttpSettings,
    LogSettings,
    RetentionSettings,
    RetrySettings,
    StatusSettings,
    StorageSettings,
    Tuning,
    WeatherSettings,
    check_url,
    data_dir_problem,
    fingerprint_bits,
    host_port,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
    public_url,
    shown,
)

__all__ = [
    "CAMERA_ID_RE",
    "MAX_CONFIG_BYTES",
    "MAX_DURATION_S",
    "MIN_INTERVAL_S",
    "CameraConfig",
    "Config",
    "ConfigError",
    "DedupSettings",
    "HttpSettings",
    "LogSettings",
    "RetentionSettings",
    "RetrySettings",
    "StatusSettings",
    "StorageSettings",
    "Tuning",
    "WeatherSettings",
    "check_url",
    "data_dir_problem",
    "fingerprint_bits",
    "host_port",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_size",
    "public_url",
    "shown",
]
