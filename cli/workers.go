package cli

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

func workersCommand() *cli.Command {
	return &cli.Command{
		Name:  "workers",
		Usage: "inspect workers",
		Subcommands: []*cli.Command{{
			Name:  "list",
			Usage: "list workers and their load",
			Action: func(c *cli.Context) error {
				client, out, err := clientAndOutput(c)
				if err != nil {
					return err
				}
				return ListWorkers(c.Context, client, out)
			},
		}},
	}
}

// ListWorkers prints the workers visible to the caller.
func ListWorkers(ctx context.Context, c *Client, out Output) error {
	ws, err := c.ListWorkers(ctx)
	if err != nil {
		return err
	}
	if out.JSON {
		return printJSON(out.W, ws)
	}
	tw := tabwriter.NewWriter(out.W, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSTATE\tTENANT\tSLOTS\tACTIVE\tCPUS\tMEMORY\tENCODERS")
	for _, w := range ws {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d MiB\t%s\n", w.ID, w.Name, w.State, dash(w.TenantID),
			w.Slots, w.ActiveJobs, w.CPUs, w.MemoryMB, strings.Join(w.Encoders, ","))
	}
	return tw.Flush()
}
