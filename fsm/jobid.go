package fsm

import "regexp"

// JobIDPattern is the syntax of a job ID as a regular expression, for the
// API's description; see ValidJobID.
const JobIDPattern = `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`

var jobIDRE = regexp.MustCompile(JobIDPattern)

// ValidJobID reports whether id has the syntax of a job ID: 1 to 64
// letters, digits, '.', '_' and '-', starting with a letter or digit. The
// API makes UUIDv7s, which have it; the importer keeps the IDs that jobs
// had in ffmpeg-rtmp (UUIDv4s, and in some databases free text such as
// "job-3"), so that the IDs users and scripts hold still name their jobs.
// Keeping them, rather than giving imported jobs new IDs with the old one
// as an alias, needs no alias index in either store and makes every job
// endpoint take the old ID; its cost is that listings, ordered by ID,
// place imported jobs by ID rather than by time. The characters are safe
// in a URL path segment, a file name and a log line.
func ValidJobID(id string) bool { return jobIDRE.MatchString(id) }
