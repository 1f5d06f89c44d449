-- History retention (fsm.PurgeJobs). The leader pages each tenant's
-- finished jobs oldest first along jobs_tenant_finished; a job without a
-- finish time (imported) sorts first.
CREATE INDEX jobs_tenant_finished ON jobs (tenant_id, finished_at NULLS FIRST, id)
	WHERE state IN ('succeeded', 'failed', 'canceled');

-- A tombstone per deleted object: its kind's table, ID, the create index
-- of the deleted version and the index of the entry that deleted it.
-- JobsExist reports a job's tombstone as the job, so that every node
-- sharing the database, however far behind, refuses a submit that reuses
-- a purged ID exactly as the nodes that applied the purge do.
CREATE TABLE tombstones (
	kind         text COLLATE "C" NOT NULL,
	id           text COLLATE "C" NOT NULL,
	create_index bigint NOT NULL CHECK (create_index >= 0),
	delete_index bigint NOT NULL CHECK (delete_index > 0),
	PRIMARY KEY (kind, id)
);
