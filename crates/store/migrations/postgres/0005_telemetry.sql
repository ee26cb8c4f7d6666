-- Device telemetry (ADR 025). A series is one figure of one device; its id
-- is a hash of its text form, unique within the device.
CREATE TABLE telemetry_series (
    device_id  TEXT NOT NULL,
    series_id  BIGINT NOT NULL,
    metric     TEXT NOT NULL,
    labels     TEXT NOT NULL,
    PRIMARY KEY (device_id, series_id)
);

-- Raw samples: one row per device and window of up to five minutes, its
-- values packed (box_metrics::codec). Kept 48 h by default.
CREATE TABLE telemetry_windows (
    device_id  TEXT NOT NULL,
    start_ms   BIGINT NOT NULL,
    end_ms     BIGINT NOT NULL,
    samples    INTEGER NOT NULL,
    data       BYTEA NOT NULL,
    PRIMARY KEY (device_id, start_ms)
);
CREATE INDEX telemetry_windows_end ON telemetry_windows(end_ms);

-- Five-minute rollups (count, min, mean, max, p95 per series): one row per
-- device, bucket and writing window (a device that moved relays within a
-- bucket has two). Kept 400 days by default.
CREATE TABLE telemetry_rollups (
    device_id  TEXT NOT NULL,
    bucket_ms  BIGINT NOT NULL,
    start_ms   BIGINT NOT NULL,
    data       BYTEA NOT NULL,
    PRIMARY KEY (device_id, bucket_ms, start_ms)
);
CREATE INDEX telemetry_rollups_bucket ON telemetry_rollups(bucket_ms);

-- Each device's last scrape: when, whether it worked (and why not), and
-- its figures (JSON), for device lists and the detail page.
CREATE TABLE telemetry_latest (
    device_id   TEXT PRIMARY KEY,
    scraped_at  BIGINT NOT NULL,
    outcome     TEXT NOT NULL,
    error       TEXT,
    last_ok_at  BIGINT,
    figures     TEXT NOT NULL
);
