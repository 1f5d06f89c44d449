package cli

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// runHelp returns the help of the command named by path.
func runHelp(t *testing.T, path ...string) string {
	t.Helper()
	out, err := runCLI(t, nil, append(path, "--help")...)
	if err != nil {
		t.Fatalf("ffrtmp %s --help: %v", strings.Join(path, " "), err)
	}
	return out
}

// TestSubmitHelpShowsServerDefaults: the defaults `jobs submit --help`
// shows are those the server gives a job that leaves the field out.
func TestSubmitHelpShowsServerDefaults(t *testing.T) {
	help := runHelp(t, "jobs", "submit")
	for flag, want := range map[string]string{
		"--timeout":         time.Duration(fsm.DefaultTimeout).String(),
		"--acquire-timeout": time.Duration(fsm.DefaultAcquireTimeout).String(),
		"--max-retries":     fmt.Sprint(fsm.DefaultMaxRetries),
		"--priority":        `"` + string(fsm.PriorityMedium) + `"`,
		"--queue":           `"` + string(fsm.QueueDefault) + `"`,
	} {
		line := helpLine(help, flag)
		if !strings.Contains(line, "(default: "+want+")") {
			t.Errorf("help of %s is %q, want default %s", flag, line, want)
		}
	}
}

// TestHelpDefaultsOnce renders the help of every command: no flag shows
// two defaults (one in its usage text, a zero one from urfave), which
// would be the zero value where the real default is something else.
func TestHelpDefaultsOnce(t *testing.T) {
	var walk func(path []string, cmds []*cli.Command)
	walk = func(path []string, cmds []*cli.Command) {
		for _, c := range cmds {
			p := append(append([]string(nil), path...), c.Name)
			if len(c.Subcommands) > 0 {
				walk(p, c.Subcommands)
				continue
			}
			for _, line := range strings.Split(runHelp(t, p...), "\n") {
				if strings.Count(line, "(default") > 1 {
					t.Errorf("ffrtmp %s --help: %q shows two defaults", strings.Join(p, " "), strings.TrimSpace(line))
				}
			}
		}
	}
	walk(nil, newApp(Env{}).Commands)
}

func helpLine(help, flag string) string {
	for _, line := range strings.Split(help, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), flag+" ") {
			return line
		}
	}
	return ""
}

// TestEveryFlagSaysWhatItIs: every flag of every command has a usage
// text, so that --help never shows a bare "--email value".
func TestEveryFlagSaysWhatItIs(t *testing.T) {
	app := newApp(Env{})
	var walk func(path string, flags []cli.Flag, cmds []*cli.Command)
	walk = func(path string, flags []cli.Flag, cmds []*cli.Command) {
		for _, f := range flags {
			if u, ok := f.(cli.DocGenerationFlag); ok && strings.TrimSpace(u.GetUsage()) == "" {
				t.Errorf("%s --%s has no usage text", path, f.Names()[0])
			}
		}
		for _, c := range cmds {
			walk(path+" "+c.Name, c.Flags, c.Subcommands)
		}
	}
	walk("ffrtmp", app.Flags, app.Commands)
}
