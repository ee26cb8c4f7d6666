-- Device-origin entry tickets, OIDC back-channel logout bookkeeping, and
-- the provider's email_verified claim.
ALTER TABLE users ADD COLUMN email_verified BIGINT;

-- The provider's session id (`sid` claim) of the login that made the session.
ALTER TABLE user_sessions ADD COLUMN idp_sid TEXT;
CREATE INDEX user_sessions_idp_sid ON user_sessions(idp_sid);

-- Single-use tickets that carry a signed-in user onto one device's origin
-- (only the hash is stored; bound to user, session and device).
CREATE TABLE device_tickets (
    ticket_hash  TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    session_hash TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    used_at      BIGINT
);

-- Logout tokens already acted on (hash of issuer and jti), kept until the
-- token could no longer be accepted anyway.
CREATE TABLE logout_tokens_seen (
    jti_hash    TEXT PRIMARY KEY,
    expires_at  BIGINT NOT NULL
);
