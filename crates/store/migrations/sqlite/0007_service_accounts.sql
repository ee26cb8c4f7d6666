-- Service accounts (ADR 029): an owner's non-person clients that get
-- short-lived access tokens with the client_credentials grant. Secrets are
-- stored hashed; a rotated secret keeps working until its expires_at (the
-- overlap). Access tokens are rows of user_sessions with kind 'service',
-- carrying the scopes and label selector they were issued with.
CREATE TABLE service_accounts (
    id           TEXT PRIMARY KEY,
    owner_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    selector     TEXT NOT NULL DEFAULT '[]',
    public_jwk   TEXT,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    last_used_at BIGINT
);
CREATE INDEX service_accounts_owner ON service_accounts(owner_id);

CREATE TABLE service_account_secrets (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES service_accounts(id) ON DELETE CASCADE,
    secret_hash  TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    last_used_at BIGINT
);
CREATE INDEX service_account_secrets_account ON service_account_secrets(account_id);

ALTER TABLE user_sessions ADD COLUMN service_account TEXT;
ALTER TABLE user_sessions ADD COLUMN scopes TEXT;
ALTER TABLE user_sessions ADD COLUMN selector TEXT;
-- The secret a token was issued for (revoking the secret ends its tokens).
ALTER TABLE user_sessions ADD COLUMN service_secret TEXT;
CREATE INDEX user_sessions_service_account ON user_sessions(service_account);

-- Who acted, when it was a service account (the row's user_id is its owner).
ALTER TABLE audit_events ADD COLUMN service_account TEXT;
