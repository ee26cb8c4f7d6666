-- When the relay last saw the device's tunnel (set at connect and at disconnect).
ALTER TABLE devices ADD COLUMN last_seen_at BIGINT;
