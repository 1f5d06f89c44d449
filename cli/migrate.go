package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ffrtmp/ffrtmp/store"
	"github.com/ffrtmp/ffrtmp/store/importer"
)

func migrateCommand() *cli.Command {
	storeFlags := []cli.Flag{
		&cli.StringFlag{Name: "store", Usage: "PostgreSQL URL, postgres://user@host/db (default $FFRTMP_STORE)"},
		&cli.StringFlag{Name: "store-file", Usage: "file holding the URL, to keep a password out of ps (default $FFRTMP_STORE_FILE)"},
	}
	storeURL := func(c *cli.Context) (string, error) {
		u, err := store.URLFrom(c.String("store"), c.String("store-file"), envOf(c).Getenv)
		if err == nil && u == "" {
			err = errors.New("give --store postgres://… (or --store-file, $FFRTMP_STORE, $FFRTMP_STORE_FILE)")
		}
		return u, err
	}
	return &cli.Command{
		Name:  "migrate",
		Usage: "apply PostgreSQL schema migrations, or import a bolt store or a legacy ffmpeg-rtmp master.db into PostgreSQL",
		UsageText: "ffrtmp migrate up|status --store postgres://…\n" +
			"ffrtmp migrate --from bolt:///path/state.db --to postgres://… [--dry-run]\n" +
			"ffrtmp migrate --from sqlite:///path/master.db --to postgres://… [--tenant T] [--dry-run]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "from", Usage: "source: bolt:///path/state.db (a stopped node's state file) or sqlite:///path/master.db (ffmpeg-rtmp)"},
			&cli.StringFlag{Name: "to", Usage: "target PostgreSQL URL (default $FFRTMP_STORE, else the file named by $FFRTMP_STORE_FILE)"},
			&cli.StringFlag{Name: "tenant", Usage: "tenant that receives a master.db's jobs (created if missing; default \"default\")"},
			&cli.BoolFlag{Name: "dry-run", Usage: "read both sides and print what would be done, failing as the import would; write nothing"},
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return fmt.Errorf("unknown migrate command %q (up, status, or --from/--to)", c.Args().First())
			}
			if c.String("from") == "" {
				return cli.ShowSubcommandHelp(c)
			}
			to := c.String("to")
			if to == "" {
				var err error
				if to, err = store.URLFrom("", "", envOf(c).Getenv); err != nil {
					return err
				}
			}
			asJSON, err := outputJSON(c)
			if err != nil {
				return err
			}
			rep, err := importer.Run(c.Context, importer.Config{
				From: c.String("from"), To: to, Tenant: c.String("tenant"), DryRun: c.Bool("dry-run"), Now: time.Now,
			})
			if rep != nil {
				if asJSON {
					if jerr := printJSON(envOf(c).Stdout, rep); jerr != nil {
						return jerr
					}
				} else {
					rep.WriteText(envOf(c).Stdout)
				}
			}
			return err
		},
		Subcommands: []*cli.Command{
			{
				Name:  "up",
				Usage: "apply pending schema migrations (nodes also apply them at start)",
				Flags: storeFlags,
				Action: func(c *cli.Context) error {
					u, err := storeURL(c)
					if err != nil {
						return err
					}
					return MigrateUp(c.Context, envOf(c).Stdout, u)
				},
			},
			{
				Name:  "status",
				Usage: "list schema migrations and whether each is applied",
				Flags: storeFlags,
				Action: func(c *cli.Context) error {
					u, err := storeURL(c)
					if err != nil {
						return err
					}
					return MigrateStatus(c.Context, envOf(c).Stdout, u)
				},
			},
		},
	}
}

// MigrateUp applies the pending migrations of the database at rawURL and
// prints each.
func MigrateUp(ctx context.Context, out io.Writer, rawURL string) error {
	st, err := store.OpenPostgres(ctx, rawURL)
	if err != nil {
		return err
	}
	defer st.Close()
	done, err := st.Migrate(ctx)
	for _, m := range done {
		fmt.Fprintf(out, "applied %03d_%s\n", m.Version, m.Name)
	}
	if err != nil {
		return err
	}
	if len(done) == 0 {
		fmt.Fprintln(out, "schema is up to date")
	}
	return nil
}

// MigrateStatus prints every migration and when it was applied.
func MigrateStatus(ctx context.Context, out io.Writer, rawURL string) error {
	st, err := store.OpenPostgres(ctx, rawURL)
	if err != nil {
		return err
	}
	defer st.Close()
	status, err := st.MigrationStatus(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tNAME\tAPPLIED")
	pending := 0
	for _, s := range status {
		applied := s.AppliedAt.UTC().Format(time.RFC3339)
		switch {
		case s.Unknown:
			applied += " (unknown to this binary: the database is newer)"
		case s.AppliedAt.IsZero():
			applied = "pending"
			pending++
		}
		fmt.Fprintf(tw, "%03d\t%s\t%s\n", s.Version, s.Name, applied)
	}
	tw.Flush()
	if pending > 0 {
		fmt.Fprintf(out, "%d pending: run `ffrtmp migrate up` (nodes also apply them at start)\n", pending)
	}
	return nil
}
