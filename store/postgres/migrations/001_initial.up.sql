-- The FSM's durable state. Every replicated object has a row with the
-- columns that queries filter and sort on, and a JSONB `doc` holding the
-- whole object as the API shows it; `doc` is what the store reads back.
-- IDs are text in the "C" collation so that they sort bytewise, as in the
-- bolt store: job IDs are UUIDv7 strings, so ID order is time order.

-- The applied index shared by every node: the Raft index of the last batch
-- any node committed. One row.
CREATE TABLE ffrtmp_state (
	id            boolean PRIMARY KEY DEFAULT true CHECK (id),
	applied_index bigint NOT NULL CHECK (applied_index >= 0)
);
INSERT INTO ffrtmp_state (id, applied_index) VALUES (true, 0);

CREATE TABLE tenants (
	id           text COLLATE "C" PRIMARY KEY,
	name         text NOT NULL,
	created_at   timestamptz NOT NULL,
	create_index bigint NOT NULL CHECK (create_index >= 0),
	modify_index bigint NOT NULL CHECK (modify_index >= 0),
	doc          jsonb NOT NULL
);

CREATE TABLE api_keys (
	id           text COLLATE "C" PRIMARY KEY,
	tenant_id    text COLLATE "C" NOT NULL REFERENCES tenants (id),
	user_name    text NOT NULL,
	role         text NOT NULL CHECK (role IN ('superadmin', 'tenant_admin', 'operator', 'viewer')),
	revoked      boolean NOT NULL,
	created_at   timestamptz NOT NULL,
	expires_at   timestamptz, -- NULL: never
	create_index bigint NOT NULL CHECK (create_index >= 0),
	modify_index bigint NOT NULL CHECK (modify_index >= 0),
	doc          jsonb NOT NULL
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE workers (
	id            text COLLATE "C" PRIMARY KEY,
	tenant_id     text COLLATE "C" REFERENCES tenants (id), -- NULL: the shared pool
	name          text NOT NULL,
	state         text NOT NULL CHECK (state IN ('up', 'down')),
	registered_at timestamptz NOT NULL,
	create_index  bigint NOT NULL CHECK (create_index >= 0),
	modify_index  bigint NOT NULL CHECK (modify_index >= 0),
	doc           jsonb NOT NULL
);

CREATE TABLE jobs (
	id           text COLLATE "C" PRIMARY KEY,
	tenant_id    text COLLATE "C" NOT NULL REFERENCES tenants (id),
	state        text NOT NULL CHECK (state IN ('queued', 'assigned', 'running', 'paused', 'succeeded', 'failed', 'canceled')),
	queue        text NOT NULL,
	priority     text NOT NULL,
	attempt      integer NOT NULL CHECK (attempt >= 0),
	retries      integer NOT NULL CHECK (retries >= 0),
	worker_id    text COLLATE "C", -- NULL: not assigned; not a foreign key, history outlives workers
	submitted_at timestamptz NOT NULL,
	finished_at  timestamptz, -- NULL: not finished
	create_index bigint NOT NULL CHECK (create_index >= 0),
	modify_index bigint NOT NULL CHECK (modify_index >= 0),
	doc          jsonb NOT NULL
);
-- A tenant's jobs newest first (IDs are time-ordered), and filtered by state.
CREATE INDEX jobs_tenant_id ON jobs (tenant_id, id);
CREATE INDEX jobs_tenant_state_id ON jobs (tenant_id, state, id);
-- Every tenant's jobs in one state (the operator's view).
CREATE INDEX jobs_state_id ON jobs (state, id);
-- The jobs Load reads: a small partial index, however long the history.
CREATE INDEX jobs_active ON jobs (id) WHERE state IN ('queued', 'assigned', 'running', 'paused');
