package worker

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	json "github.com/go-json-experiment/json/v1"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// Publishing is a two-phase commit between the worker and the cluster.
// A successful run's outputs wait under temporary names (see Start) while
// the worker reports the finish; the cluster's answer decides whether they
// are moved into place (accepted) or deleted (refused as stale). Before it
// sends the report, the worker writes the report and the moves to a
// journal entry in the media root, and it removes the entry once the moves
// or the deletion are done. A worker killed in between (the report sent,
// its answer or the moves not yet done) finds the entry at its next start,
// keeps those temporaries, sends the same report again and acts on the
// answer: the cluster answers a repeat of a finish it already applied as
// accepted (server.WorkerService.Finish), one it moved past as stale. So a
// job the cluster holds as succeeded gets its files, once the worker that
// ran it is back, and a stale attempt still never publishes.

// journalDir names the directory under the media root that holds the
// publish journals, one subdirectory per worker (its owner tag). Tenant
// IDs never start with a dot, so it cannot be a tenant's media directory.
const journalDir = ".ffrtmp-publish"

// pendingFile is one file output of a finished run: where it waits and
// where it goes. For an HLS rendition Temp is the directory that holds the
// playlist (Prefix.m3u8) and Segments.
type pendingFile struct {
	Temp     string   `json:"temp"`
	Final    string   `json:"final"`
	Prefix   string   `json:"prefix,omitempty"`
	Segments []string `json:"segments,omitempty"`
}

// pending is a journal entry: a finish report and the outputs it
// publishes when the cluster accepts it.
type pending struct {
	Finish *fsm.FinishJob `json:"finish"`
	Files  []pendingFile  `json:"files"`
	path   string         // the entry's file
}

// journal is one worker's directory of pending publications.
type journal struct{ dir string }

func newJournal(mediaRoot, owner string) journal {
	return journal{dir: filepath.Join(mediaRoot, journalDir, ownerTag(owner))}
}

// record durably writes the entry for fin and files before fin is sent,
// and returns it.
func (j journal) record(fin *fsm.FinishJob, files []pendingFile) (*pending, error) {
	p := &pending{Finish: fin, Files: files,
		path: filepath.Join(j.dir, fin.JobID+"-"+strconv.Itoa(fin.Attempt)+".json")}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(j.dir, 0o700); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(j.dir, ".entry-*")
	if err != nil {
		return nil, err
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), p.path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return nil, err
	}
	if d, err := os.Open(j.dir); err == nil {
		d.Sync()
		d.Close()
	}
	return p, nil
}

// load returns the entries a killed process of this worker left. It
// deletes what a write interrupted before its rename left, and an entry
// it cannot read (logged: its outputs are then removed as leftovers).
func (j journal) load(log *slog.Logger) []*pending {
	ents, err := os.ReadDir(j.dir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			log.Warn("read publish journal", "error", err)
		}
		return nil
	}
	var out []*pending
	for _, e := range ents {
		p := &pending{path: filepath.Join(j.dir, e.Name())}
		if strings.HasPrefix(e.Name(), ".entry-") {
			p.done()
			continue
		}
		b, err := os.ReadFile(p.path)
		if err == nil {
			err = json.Unmarshal(b, p)
		}
		if err == nil && p.Finish == nil {
			err = errors.New("no finish report")
		}
		if err != nil {
			log.Warn("unreadable publish journal entry removed", "entry", p.path, "error", err)
			p.done()
			continue
		}
		out = append(out, p)
	}
	return out
}

// done removes a settled entry.
func (p *pending) done() error {
	if p == nil {
		return nil
	}
	if err := os.Remove(p.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// temps returns the temporary paths the entry still needs.
func (p *pending) temps() []string {
	var out []string
	for _, f := range p.Files {
		out = append(out, f.Temp)
	}
	return out
}

// publishFiles moves outputs into place. With resumed set, a temporary
// already gone counts as moved: an earlier process moved it before it
// was killed.
func publishFiles(files []pendingFile, resumed bool) error {
	for _, f := range files {
		var err error
		if f.Prefix != "" {
			err = publishHLS(f, resumed)
		} else {
			err = move(f.Temp, f.Final, resumed)
		}
		if err != nil {
			return fmt.Errorf("move %s into place: %w", f.Final, err)
		}
	}
	return nil
}

// discardFiles deletes the temporary outputs that still exist.
func discardFiles(files []pendingFile) {
	for _, f := range files {
		_ = os.RemoveAll(f.Temp)
	}
}

// publishHLS moves the segments of an HLS rendition, then its playlist,
// out of the temporary directory beside the playlist's final path, so
// that a reader of the playlist never misses a segment it names. It then
// removes the temporary directory and the segments <prefix>_NNNNN.ts that
// an earlier, longer rendition to the same path left after the last one
// (ffmpeg numbers segments from 0).
func publishHLS(f pendingFile, resumed bool) error {
	dir := filepath.Dir(f.Final)
	for _, name := range f.Segments {
		if err := move(filepath.Join(f.Temp, name), filepath.Join(dir, name), resumed); err != nil {
			return err
		}
	}
	if err := move(filepath.Join(f.Temp, f.Prefix+".m3u8"), f.Final, resumed); err != nil {
		return err
	}
	if err := os.RemoveAll(f.Temp); err != nil {
		return err
	}
	for k := len(f.Segments); ; k++ {
		stale := filepath.Join(dir, fmt.Sprintf("%s_%05d.ts", f.Prefix, k))
		if fi, err := os.Lstat(stale); err != nil || !fi.Mode().IsRegular() || os.Remove(stale) != nil {
			return nil
		}
	}
}

// move gives a file ffmpeg wrote the mode of other outputs and renames it
// to path; with resumed set, a file already gone is not an error.
func move(file, path string, resumed bool) error {
	err := os.Chmod(file, 0o640)
	if err == nil {
		err = os.Rename(file, path)
	}
	if resumed && errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
