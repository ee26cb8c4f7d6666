-- Device telemetry (ADR 025).

-- The device's own metrics path on its local API (NULL: the relay's
-- --telemetry-path).
ALTER TABLE devices ADD COLUMN metrics_path TEXT;

-- A series is one figure of one device; its id
-- is a hash of its text form, unique within the device.
CREATE TABLE telemetry_series (
    device_id  TEXT NOT NULL,
    series_id  BIGINT NOT NULL,
    metric     TEXT NOT NULL,
    labels     TEXT NOT NULL,
    PRIMARY KEY (device_id, series_id)
) WITHOUT ROWID;

-- Raw samples: one row per device and window of up to five minutes, its
-- values packed (box_metrics::codec). Kept 48 h by default.
CREATE TABLE telemetry_windows (
    device_id  TEXT NOT NULL,
    start_ms   BIGINT NOT NULL,
    end_ms     BIGINT NOT NULL,
    samples    INTEGER NOT NULL,
    data       BLOB NOT NULL,
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
    data       BLOB NOT NULL,
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

-- Each owner's health rules (defaults apply while there is no row).
CREATE TABLE health_rules (
    owner_id            TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    fps_floor           DOUBLE PRECISION NOT NULL,
    accel_temp_ceiling  DOUBLE PRECISION NOT NULL,
    disk_ceiling        DOUBLE PRECISION NOT NULL,
    offline_minutes     BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);

-- Each device's health state and since when; changed only by a guarded
-- update, so of several api-servers one reports each change.
CREATE TABLE device_health (
    device_id  TEXT PRIMARY KEY,
    owner_id   TEXT NOT NULL,
    state      TEXT NOT NULL,
    reasons    TEXT NOT NULL,
    since      BIGINT NOT NULL
);
CREATE INDEX device_health_owner ON device_health(owner_id);

-- Webhooks an owner registered; the secret signs every delivery.
CREATE TABLE webhooks (
    id          TEXT PRIMARY KEY,
    owner_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    url         TEXT NOT NULL,
    secret      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX webhooks_owner ON webhooks(owner_id);

-- One row per event and webhook: its attempts, due time (NULL once
-- delivered or given up) and last answer.
CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,
    webhook_id       TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    owner_id         TEXT NOT NULL,
    body             TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    attempts         BIGINT NOT NULL,
    next_attempt_at  BIGINT,
    last_status      BIGINT,
    last_error       TEXT,
    delivered_at     BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at);
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries(webhook_id, created_at);
