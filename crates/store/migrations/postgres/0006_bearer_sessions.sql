-- Sessions presented as a bearer token by the `edge` CLI (ADR 028) live
-- beside browser sessions; `kind` says which door a session opens, and
-- `label` names the client in "my sessions".
ALTER TABLE user_sessions ADD COLUMN kind TEXT NOT NULL DEFAULT 'browser';
ALTER TABLE user_sessions ADD COLUMN label TEXT;
