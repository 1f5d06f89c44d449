-- The audit log: one row per record, keyed by its sequence number. `id`
-- is the sequence number in 20 digits (the generic object key), `seq` the
-- same number for ordering and paging; `doc` is the whole record, which
-- is what the store reads back and what verification checks. Records
-- are only ever inserted. The typed columns serve the filters of
-- GET /v1/audit; tenant_id is '' for a record of the installation.
CREATE TABLE audit_records (
	id           text COLLATE "C" PRIMARY KEY,
	seq          bigint NOT NULL UNIQUE CHECK (seq > 0),
	tenant_id    text COLLATE "C" NOT NULL, -- not a foreign key: history outlives tenants
	actor_user   text COLLATE "C" NOT NULL,
	actor_key    text COLLATE "C" NOT NULL,
	action       text COLLATE "C" NOT NULL,
	at           timestamptz NOT NULL,
	create_index bigint NOT NULL CHECK (create_index >= 0),
	modify_index bigint NOT NULL CHECK (modify_index >= 0),
	doc          jsonb NOT NULL
);
CREATE INDEX audit_records_tenant ON audit_records (tenant_id, seq);
CREATE INDEX audit_records_user ON audit_records (actor_user, seq);
CREATE INDEX audit_records_key ON audit_records (actor_key, seq);
CREATE INDEX audit_records_action ON audit_records (action, seq);
CREATE INDEX audit_records_at ON audit_records (at, seq);
