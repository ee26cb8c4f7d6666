-- One-time pairing codes (only the hash is stored) and the append-only audit log.
CREATE TABLE pairing_codes (
    id           TEXT PRIMARY KEY,
    code_hash    TEXT NOT NULL UNIQUE,
    owner_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    used_at      BIGINT,
    cancelled_at BIGINT,
    device_id    TEXT
);
CREATE INDEX pairing_codes_owner ON pairing_codes(owner_id);

CREATE TABLE audit_events (
    id          TEXT PRIMARY KEY,
    seq         BIGINT NOT NULL,
    user_id     TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    detail      TEXT NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL
);
CREATE INDEX audit_events_user ON audit_events(user_id, seq);
