// Package importer moves the objects of a bolt state file or of a legacy
// ffmpeg-rtmp master.db into a PostgreSQL database, before a cluster starts
// on it (`ffrtmp migrate --from … --to …`).
package importer
