-- Users, user sessions, devices and device credentials.
-- Instants are Unix milliseconds (BIGINT); ids are UUID text.
CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    issuer      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    email       TEXT,
    name        TEXT,
    created_at  BIGINT NOT NULL,
    UNIQUE (issuer, subject)
);

CREATE TABLE user_sessions (
    id_hash      TEXT PRIMARY KEY,
    public_id    TEXT NOT NULL UNIQUE,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX user_sessions_user ON user_sessions(user_id);

CREATE TABLE devices (
    id            TEXT PRIMARY KEY,
    owner_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    labels        TEXT NOT NULL DEFAULT '[]',
    model         TEXT,
    serial        TEXT,
    agent_version TEXT,
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT
);
CREATE INDEX devices_owner ON devices(owner_id);

CREATE TABLE device_credentials (
    token_hash  TEXT PRIMARY KEY,
    device_id   TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX device_credentials_device ON device_credentials(device_id);
