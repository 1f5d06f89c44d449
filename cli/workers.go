package cli

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ffrtmp/ffrtmp/server"
	"github.com/urfave/cli/v2"
)

func workersCommand() *cli.Command {
	return &cli.Command{
		Name:  "workers",
		Usage: "inspect workers and manage their tokens",
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "list workers and their load",
				Action: func(c *cli.Context) error {
					client, out, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					return ListWorkers(c.Context, client, out)
				},
			},
			workerAction("get", "show a worker", "GET", ""),
			workerAction("drain", "let a worker finish what it runs and give it nothing new", "POST", "/drain"),
			workerAction("undrain", "let a drained worker take jobs again", "POST", "/undrain"),
			workerTokenCommand(),
		},
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
		state := string(w.State)
		if w.Draining {
			state += ",draining"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d MiB\t%s\n", cell(w.ID), cell(w.Name), cell(state), dash(w.TenantID),
			w.Slots, w.ActiveJobs, w.CPUs, w.MemoryMB, cell(strings.Join(w.Encoders, ",")))
	}
	return tw.Flush()
}

func workerAction(name, usage, method, suffix string) *cli.Command {
	return &cli.Command{
		Name: name, Usage: usage, ArgsUsage: "ID",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("%s takes one worker ID", name)
			}
			client, out, err := clientAndOutput(c)
			if err != nil {
				return err
			}
			var w server.Worker
			var body any
			if method == "POST" {
				body = struct{}{}
			}
			if err := client.do(c.Context, method, "/v1/workers/"+url.PathEscape(c.Args().First())+suffix, nil, body, &w); err != nil {
				return err
			}
			if out.JSON {
				return printJSON(out.W, w)
			}
			tw := tabwriter.NewWriter(out.W, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "ID:\t%s\nName:\t%s\nState:\t%s\nDraining:\t%v\nTenant:\t%s\nSlots:\t%d (%d active)\nCPUs:\t%d\nMemory:\t%d MiB\nEncoders:\t%s\nRegistered:\t%s\n",
				w.ID, w.Name, w.State, w.Draining, dash(w.TenantID), w.Slots, w.ActiveJobs, w.CPUs, w.MemoryMB,
				strings.Join(w.Encoders, ","), w.RegisteredAt.Local().Format(time.RFC3339))
			for k, v := range w.Labels {
				fmt.Fprintf(tw, "Label:\t%s=%s\n", k, v)
			}
			return tw.Flush()
		},
	}
}
