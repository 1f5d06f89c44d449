package cli_test

import (
	"errors"
	"testing"

	"github.com/ffrtmp/ffrtmp/cli"
)

func TestCheckArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"server", "--bootstrap-expect", "3", "--join", "a:7071,b:7071", "--drain", "15s", "--cluster-key-file", "/nonexistent"}, true},
		{[]string{"worker", "--join", "a:7071", "--token-file", "/t", "--slots", "2"}, true},
		{[]string{"cluster", "init", "--addr", "http://a:7070", "--cluster-key-file", "/k"}, true},
		{[]string{"server", "--no-such-flag"}, false},
		{[]string{"server", "--drain", "ten seconds"}, false},
		{[]string{"server", "--bootstrap-expect", "three"}, false},
		{[]string{"nosuchcommand"}, false},
		{[]string{"cluster"}, false},
		{[]string{"--help"}, false},
	} {
		err := cli.CheckArgs(tc.args)
		if (err == nil) != tc.ok {
			t.Errorf("CheckArgs(%q) = %v, want ok=%v", tc.args, err, tc.ok)
		}
	}
	if err := cli.CheckArgs([]string{"cluster"}); !errors.Is(err, cli.ErrNoCommand) {
		t.Errorf("CheckArgs(cluster) = %v, want ErrNoCommand", err)
	}
}
