package fsm_test

import (
	"strings"
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
)

func TestValidJobID(t *testing.T) {
	t.Parallel()
	for id, want := range map[string]bool{
		"019a1b2c-3d4e-7f00-8000-000000000001":   true, // UUIDv7, as the API makes them
		"6f1c1a52-3b5e-4c3e-9a43-1d2f3e4a5b6c":   true, // UUIDv4, as ffmpeg-rtmp made them
		"job-3":                                  true, // free text of an old master.db
		"a.b_c-D9":                               true,
		strings.Repeat("a", 64):                  true,
		strings.Repeat("a", 65):                  false,
		"":                                       false,
		".":                                      false,
		"..":                                     false,
		"-x":                                     false,
		"job 3":                                  false,
		"job/3":                                  false,
		"job%2F3":                                false,
		"job\x003":                               false,
		"job\n3":                                 false,
		"{6f1c1a52-3b5e-4c3e-9a43-1d2f3e4a5b6c}": false,
		"urn:uuid:6f1c1a52-3b5e-4c3e-9a43-1d2f3e4a5b6c": false,
		"jöb": false,
	} {
		if got := fsm.ValidJobID(id); got != want {
			t.Errorf("ValidJobID(%q) = %v, want %v", id, got, want)
		}
	}
}
