-- Worker tokens: a remote worker's credential (see fsm.WorkerToken). The
-- secret is never stored, only its SHA-256 in doc. tenant_id NULL is the
-- shared pool.
CREATE TABLE worker_tokens (
	id           text COLLATE "C" PRIMARY KEY,
	tenant_id    text COLLATE "C" REFERENCES tenants (id), -- NULL: the shared pool
	name         text NOT NULL,
	revoked      boolean NOT NULL,
	created_at   timestamptz NOT NULL,
	create_index bigint NOT NULL CHECK (create_index >= 0),
	modify_index bigint NOT NULL CHECK (modify_index >= 0),
	doc          jsonb NOT NULL
);
CREATE INDEX worker_tokens_tenant ON worker_tokens (tenant_id);
