package cli

import (
	"errors"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"
)

// ErrNoCommand means CheckArgs was given arguments that name no command
// that runs (only help, or a command group without its subcommand).
var ErrNoCommand = errors.New("the arguments name no command")

// CheckArgs parses args (without the program name) as Run would, with
// flags also read from the environment, but runs no command: it reports
// an unknown command or flag, a flag without its value, or a value that
// does not parse (a duration, a number). Checks that a command makes when
// it runs (that a key file exists, that flags agree) are not made.
// Deployment files use it to prove their command lines.
func CheckArgs(args []string) error {
	app := newApp(Env{Stdout: io.Discard, Stderr: io.Discard, Stdin: eofReader{}, Getenv: func(string) string { return "" }})
	ran := ""
	var disarm func(cmds []*cli.Command)
	disarm = func(cmds []*cli.Command) {
		for _, c := range cmds {
			if c.Action != nil {
				name := c.Name
				c.Action = func(*cli.Context) error { ran = name; return nil }
			}
			c.Before, c.After = nil, nil
			disarm(c.Subcommands)
		}
	}
	disarm(app.Commands)
	app.Before, app.After = nil, nil
	app.HideHelp = false
	if err := app.Run(append([]string{"ffrtmp"}, reorderArgs(app, args)...)); err != nil {
		return fmt.Errorf("%v: %w", args, err)
	}
	if ran == "" {
		return fmt.Errorf("%v: %w", args, ErrNoCommand)
	}
	return nil
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
