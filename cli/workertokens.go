package cli

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ffrtmp/ffrtmp/server"
)

func workerTokenCommand() *cli.Command {
	return &cli.Command{
		Name:  "token",
		Usage: "create, list and revoke worker tokens (a remote worker's credential)",
		Subcommands: []*cli.Command{
			{
				Name:  "create",
				Usage: "create a worker token; it is printed once, alone on the first line",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "tenant", Usage: "tenant whose dedicated worker the token makes (default: your own; a super-admin's default is the shared pool)"},
					&cli.StringFlag{Name: "name", Usage: "a name for the token, e.g. the worker's host"},
				},
				Action: func(c *cli.Context) error {
					client, out, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					return CreateWorkerToken(c.Context, client, out, envOf(c).Stderr, c.String("tenant"), c.String("name"))
				},
			},
			{
				Name:  "list",
				Usage: "list worker tokens (never their secrets)",
				Action: func(c *cli.Context) error {
					client, out, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					return ListWorkerTokens(c.Context, client, out)
				},
			},
			{
				Name:      "revoke",
				Usage:     "revoke a worker token: its worker is refused from now on and its jobs are requeued",
				ArgsUsage: "ID",
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return fmt.Errorf("revoke takes one worker token ID")
					}
					client, out, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					var t server.WorkerTokenView
					if err := client.do(c.Context, "DELETE", "/v1/worker-tokens/"+url.PathEscape(c.Args().First()), nil, nil, &t); err != nil {
						return err
					}
					if out.JSON {
						return printJSON(out.W, t)
					}
					return printWorkerTokens(out.W, []server.WorkerTokenView{t})
				},
			},
		},
	}
}

// CreateWorkerToken creates a worker token and prints it: in table mode
// the token alone on out's first line, and how to start a worker with it
// on info.
func CreateWorkerToken(ctx context.Context, c *Client, out Output, info io.Writer, tenant, name string) error {
	var created server.CreatedWorkerToken
	req := server.CreateWorkerTokenRequest{TenantID: tenant, Name: name}
	if err := c.do(ctx, "POST", "/v1/worker-tokens", nil, req, &created); err != nil {
		return err
	}
	if out.JSON {
		return printJSON(out.W, created)
	}
	fmt.Fprintln(out.W, created.Token)
	fmt.Fprintf(info, "Worker token %s for %s (shown once). Start the worker with it in a file:\n\n    ffrtmp worker --join %s --token-file FILE --ca-hash %s\n\n",
		created.WorkerToken.ID, poolName(created.WorkerToken.TenantID), strings.Join(created.Join, ","), created.CAHash)
	return nil
}

// ListWorkerTokens prints the worker tokens the caller may manage.
func ListWorkerTokens(ctx context.Context, c *Client, out Output) error {
	var list struct {
		Tokens []server.WorkerTokenView `json:"tokens"`
	}
	if err := c.do(ctx, "GET", "/v1/worker-tokens", nil, nil, &list); err != nil {
		return err
	}
	if out.JSON {
		return printJSON(out.W, list.Tokens)
	}
	return printWorkerTokens(out.W, list.Tokens)
}

func printWorkerTokens(w io.Writer, ts []server.WorkerTokenView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tTENANT\tWORKER\tREVOKED\tCREATED\tCREATED BY")
	for _, t := range ts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\t%s\n", cell(t.ID), dash(cell(t.Name)), dash(cell(t.TenantID)), dash(cell(t.WorkerID)),
			t.Revoked, t.CreatedAt.Local().Format(time.RFC3339), dash(cell(t.CreatedBy)))
	}
	return tw.Flush()
}
