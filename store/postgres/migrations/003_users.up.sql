-- Users, invitations, and the owner, name and lifecycle of API keys.
-- Emails are unique per installation; the FSM enforces that (compared in
-- lower case) before anything reaches the log, so the table has no
-- unique constraint that could refuse a committed entry.

CREATE TABLE users (
	id           text COLLATE "C" PRIMARY KEY,
	tenant_id    text COLLATE "C" NOT NULL REFERENCES tenants (id),
	email        text NOT NULL,
	role         text NOT NULL CHECK (role IN ('superadmin', 'tenant_admin', 'operator', 'viewer')),
	disabled     boolean NOT NULL,
	created_at   timestamptz NOT NULL,
	create_index bigint NOT NULL CHECK (create_index >= 0),
	modify_index bigint NOT NULL CHECK (modify_index >= 0),
	doc          jsonb NOT NULL
);
CREATE INDEX users_tenant ON users (tenant_id);
CREATE INDEX users_email ON users (lower(email));

-- NULL: a key made before keys had users.
ALTER TABLE api_keys ADD COLUMN user_id text COLLATE "C" REFERENCES users (id);
ALTER TABLE api_keys ADD COLUMN last_used_at timestamptz;
CREATE INDEX api_keys_user ON api_keys (user_id);

CREATE TABLE invitations (
	id           text COLLATE "C" PRIMARY KEY,
	tenant_id    text COLLATE "C" NOT NULL REFERENCES tenants (id),
	email        text NOT NULL,
	role         text NOT NULL CHECK (role IN ('superadmin', 'tenant_admin', 'operator', 'viewer')),
	revoked      boolean NOT NULL,
	created_at   timestamptz NOT NULL,
	expires_at   timestamptz NOT NULL,
	accepted_at  timestamptz, -- NULL: not used yet
	user_id      text COLLATE "C", -- the user it created
	create_index bigint NOT NULL CHECK (create_index >= 0),
	modify_index bigint NOT NULL CHECK (modify_index >= 0),
	doc          jsonb NOT NULL
);
CREATE INDEX invitations_tenant ON invitations (tenant_id);
