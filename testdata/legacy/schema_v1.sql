-- The tables of an early ffmpeg-rtmp master.db (SQLite), before queues,
-- priorities, logs and retry limits were added. Written by the master
-- through mattn/go-sqlite3, so DATETIME columns hold text such as
-- "2024-05-02 10:04:05.123456789+00:00".
CREATE TABLE nodes (
	id TEXT PRIMARY KEY,
	address TEXT NOT NULL,
	type TEXT NOT NULL,
	cpu_threads INTEGER NOT NULL,
	cpu_model TEXT NOT NULL,
	has_gpu BOOLEAN NOT NULL,
	gpu_type TEXT,
	ram_bytes INTEGER NOT NULL,
	labels TEXT,
	status TEXT NOT NULL,
	last_heartbeat DATETIME NOT NULL,
	registered_at DATETIME NOT NULL,
	current_job_id TEXT
);

CREATE TABLE jobs (
	id TEXT PRIMARY KEY,
	scenario TEXT NOT NULL,
	confidence TEXT,
	parameters TEXT,
	status TEXT NOT NULL,
	node_id TEXT,
	created_at DATETIME NOT NULL,
	started_at DATETIME,
	completed_at DATETIME,
	retry_count INTEGER NOT NULL,
	error TEXT
);

CREATE INDEX idx_jobs_status ON jobs(status);
CREATE INDEX idx_nodes_status ON nodes(status);
