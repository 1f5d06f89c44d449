// Package worker runs ffmpeg jobs assigned by the cluster and reports their progress and results.
package worker
