// Command ffrtmp is the whole ffrtmp platform in one binary: control-plane
// node, FFmpeg worker, dev mode and command line client.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/ffrtmp/ffrtmp/cli"
)

// version is set at build time: -ldflags "-X main.version=…".
var version = "dev"

func main() {
	if err := run(context.Background(), os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "ERROR: %v\n", err)
		if errors.Is(err, cli.ErrConfig) {
			os.Exit(78) // EX_CONFIG: systemd units do not restart on it
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	return cli.Run(ctx, cli.Env{Stdout: os.Stdout, Stderr: os.Stderr, Stdin: os.Stdin, Getenv: os.Getenv, Version: version, Process: true}, args)
}
