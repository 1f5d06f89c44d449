// Package cli is the ffrtmp command line: the server and dev commands and
// the API client commands. Each urfave action only gathers its flags and
// calls a plain function that tests call too.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	json "github.com/go-json-experiment/json/v1"
	"github.com/urfave/cli/v2"
)

// Env holds the process environment a command runs in, so that tests can
// run commands in-process.
type Env struct {
	// Version is the binary's version, set at build time; "" is a
	// development build.
	Version string
	Stdout  io.Writer
	Stderr  io.Writer
	Stdin   io.Reader
	Getenv  func(string) string
	// Process is set when the command runs as the whole process (main),
	// not in a test: the logger of a long-running command (server, dev,
	// worker) then becomes the process's default, so that slog's and the
	// log package's default output (from libraries) has the same format.
	Process bool
}

// ErrConfig marks an error in a command's configuration (flags, key or
// certificate files): retrying will not help. The process exits with 78.
var ErrConfig = errors.New("configuration error")

// Run runs the ffrtmp command line with args (without the program name).
func Run(ctx context.Context, env Env, args []string) error {
	app := newApp(env)
	return app.RunContext(ctx, append([]string{"ffrtmp"}, reorderArgs(app, args)...))
}

var (
	flagAddr = &cli.StringFlag{Name: "addr", Usage: "API address of any node, or several, comma-separated (env FFRTMP_ADDR, else the CLI config file)"}
	flagKey  = &cli.StringFlag{Name: "api-key", Usage: "API key (env FFRTMP_API_KEY, else the CLI config file)"}
	flagOut  = &cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "table", Usage: "output format: table or json"}
	// flagTenant is a super-admin's way to act on another tenant; the
	// server refuses it (permission_denied) to anyone else.
	flagTenant = &cli.StringFlag{Name: "tenant", Usage: "super-admin: act on this tenant in job, worker, user, key and invitation commands (env FFRTMP_TENANT)"}
)

// clientFlags are accepted globally and by every client command.
var clientFlags = []cli.Flag{flagAddr, flagKey, flagOut, flagTenant}

func newApp(env Env) *cli.App {
	version := env.Version
	if v, err := Versions(env.Version); err == nil {
		version = v.String() // --version: with the VCS revision
	}
	return &cli.App{
		Name:      "ffrtmp",
		Usage:     "clustered FFmpeg job platform",
		Version:   version,
		Writer:    env.Stdout,
		ErrWriter: env.Stderr,
		Reader:    env.Stdin,
		Flags:     clientFlags,
		Metadata:  map[string]any{"env": env},
		// Errors are printed once by main, not by urfave as well.
		ExitErrHandler: func(*cli.Context, error) {},
		Commands: []*cli.Command{
			devCommand(),
			serverCommand(),
			workerCommand(),
			keygenCommand(),
			clusterCommand(),
			jobsCommand(),
			workersCommand(),
			whoamiCommand(),
			auditCommand(),
			tenantsCommand(),
			usersCommand(),
			keysCommand(),
			benchCommand(),
			migrateCommand(),
			versionCommand(),
		},
	}
}

func envOf(c *cli.Context) Env { return c.App.Metadata["env"].(Env) }

// reorderArgs lets flags go anywhere, as users expect: the global client
// flags (--addr, --api-key, -o, --tenant) are moved to the front wherever they
// appear, and a leaf command's own flags are moved in front of its
// positional arguments (Go's flag parsing stops at the first argument).
func reorderArgs(app *cli.App, args []string) []string {
	var global, head, fl, pos []string
	cmds, flags := app.Commands, []cli.Flag(nil)
	leaf := false
	for j := 0; j < len(args); j++ {
		a := args[j]
		if a == "--" {
			pos = append(pos, args[j:]...)
			break
		}
		if strings.HasPrefix(a, "-") && a != "-" {
			// A command's own flag wins over a global one of the same
			// name (jobs submit --output is the job's output URL).
			if !isFlag(flags, a) && isFlag(app.Flags, a) {
				w := flagWidth(app.Flags, a, args[j+1:])
				global = append(global, args[j:j+w]...)
				j += w - 1
				continue
			}
			w := flagWidth(flags, a, args[j+1:])
			if leaf {
				fl = append(fl, args[j:j+w]...)
			} else {
				head = append(head, args[j:j+w]...)
			}
			j += w - 1
			continue
		}
		if !leaf {
			var next *cli.Command
			for _, c := range cmds {
				if c.HasName(a) {
					next = c
				}
			}
			if next != nil {
				head = append(head, a)
				cmds, flags = next.Subcommands, next.Flags
				leaf = len(cmds) == 0
				continue
			}
			leaf = true
		}
		pos = append(pos, a)
	}
	out := append(global, head...)
	return append(append(out, fl...), pos...)
}

func isFlag(flags []cli.Flag, a string) bool {
	name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return true
			}
		}
	}
	return false
}

// flagWidth returns how many tokens flag token a uses: 1 for a boolean
// flag or --name=value, else 2 when a value follows.
func flagWidth(flags []cli.Flag, a string, rest []string) int {
	name := strings.TrimLeft(a, "-")
	if strings.Contains(name, "=") {
		return 1
	}
	for _, f := range flags {
		for _, n := range f.Names() {
			if n != name {
				continue
			}
			if _, ok := f.(*cli.BoolFlag); ok {
				return 1
			}
			if len(rest) > 0 {
				return 2
			}
			return 1
		}
	}
	return 1
}

// Config is the CLI config file: where the API is and which key to use.
type Config struct {
	Addr   string `json:"addr"`
	APIKey string `json:"api_key"`
}

// ConfigPath returns $XDG_CONFIG_HOME/ffrtmp/config.json (or
// ~/.config/ffrtmp/config.json).
func ConfigPath(getenv func(string) string) (string, error) {
	dir := getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home := getenv("HOME")
		if home == "" {
			return "", errors.New("neither XDG_CONFIG_HOME nor HOME is set")
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "ffrtmp", "config.json"), nil
}

// LoadConfig reads the CLI config file; a missing file is an empty config.
func LoadConfig(getenv func(string) string) (*Config, error) {
	path, err := ConfigPath(getenv)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &Config{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("parse config %s: %w", path, err)
	}
	return &c, nil
}

// SaveConfig writes the CLI config file with mode 0600.
func SaveConfig(getenv func(string) string, c *Config) (string, error) {
	path, err := ConfigPath(getenv)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("create config dir: %w", err)
	}
	b, _ := json.MarshalIndent(c, "", "  ")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return "", fmt.Errorf("write config: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("write config: %w", err)
	}
	return path, nil
}

// clientFrom builds an API client from flags, environment and config
// file, in that order of precedence.
func clientFrom(c *cli.Context) (*Client, error) {
	env := envOf(c)
	cfg, err := LoadConfig(env.Getenv)
	if err != nil {
		return nil, err
	}
	pick := func(flag, envName, file string) string {
		if v := c.String(flag); v != "" {
			return v
		}
		if v := env.Getenv(envName); v != "" {
			return v
		}
		return file
	}
	addr := pick("addr", "FFRTMP_ADDR", cfg.Addr)
	if addr == "" {
		addr = "http://127.0.0.1:7070"
	}
	key := pick("api-key", "FFRTMP_API_KEY", cfg.APIKey)
	client, err := NewClient(addr, key)
	if err != nil {
		return nil, err
	}
	if key == "" {
		path, _ := ConfigPath(env.Getenv)
		client.authHint = fmt.Sprintf("no API key is set: `ffrtmp dev` starts a local cluster and writes its key to %s; "+
			"else pass --api-key or set FFRTMP_API_KEY", path)
	}
	return client.ForTenant(pick("tenant", "FFRTMP_TENANT", "")), nil
}

// outputJSON reads the global output format flag by its alias "o", which
// no command redefines (jobs submit has its own --output).
func outputJSON(c *cli.Context) (bool, error) {
	switch o := c.String("o"); o {
	case "json":
		return true, nil
	case "table", "":
		return false, nil
	default:
		return false, fmt.Errorf("unknown output format %q (table or json)", o)
	}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
