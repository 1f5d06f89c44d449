-- The tables of a later ffmpeg-rtmp master.db (SQLite): node names and
-- GPU capabilities, job sequence numbers, queues, priorities, progress,
-- logs, retry limits and failure reasons. Written through
-- mattn/go-sqlite3, so DATETIME columns hold text such as
-- "2024-05-02 10:04:05.123456789+00:00".
CREATE TABLE nodes (
	id TEXT PRIMARY KEY,
	name TEXT NOT NULL,
	address TEXT NOT NULL UNIQUE,
	type TEXT NOT NULL,
	cpu_threads INTEGER NOT NULL,
	cpu_model TEXT NOT NULL,
	cpu_load_percent REAL DEFAULT 0,
	has_gpu BOOLEAN NOT NULL,
	gpu_type TEXT,
	gpu_capabilities TEXT,
	ram_total_bytes INTEGER NOT NULL,
	ram_free_bytes INTEGER DEFAULT 0,
	labels TEXT,
	status TEXT NOT NULL,
	last_heartbeat DATETIME NOT NULL,
	registered_at DATETIME NOT NULL,
	current_job_id TEXT
);

CREATE TABLE jobs (
	id TEXT PRIMARY KEY,
	sequence_number INTEGER NOT NULL,
	scenario TEXT NOT NULL,
	confidence TEXT,
	engine TEXT NOT NULL DEFAULT 'auto',
	parameters TEXT,
	status TEXT NOT NULL,
	queue TEXT DEFAULT 'default',
	priority TEXT DEFAULT 'medium',
	progress INTEGER DEFAULT 0,
	node_id TEXT,
	created_at DATETIME NOT NULL,
	started_at DATETIME,
	last_activity_at DATETIME,
	completed_at DATETIME,
	retry_count INTEGER NOT NULL DEFAULT 0,
	max_retries INTEGER DEFAULT 3,
	retry_reason TEXT,
	error TEXT,
	failure_reason TEXT,
	logs TEXT,
	state_transitions TEXT
);

CREATE UNIQUE INDEX idx_jobs_sequence ON jobs(sequence_number);
CREATE INDEX idx_jobs_status ON jobs(status);
CREATE INDEX idx_jobs_queue_priority ON jobs(queue, priority, created_at);
CREATE INDEX idx_nodes_status ON nodes(status);
CREATE UNIQUE INDEX idx_nodes_address ON nodes(address);
