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

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

func keysCommand() *cli.Command {
	return &cli.Command{
		Name:  "keys",
		Usage: "list, revoke and rotate API keys",
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "list API keys: your own, or the tenant's for a tenant admin",
				Flags: []cli.Flag{&cli.StringFlag{Name: "user", Usage: "only this user's keys (ID or email)"}},
				Action: func(c *cli.Context) error {
					client, out, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					return ListKeys(c.Context, client, out, c.String("user"))
				},
			},
			{
				Name: "revoke", Usage: "revoke an API key", ArgsUsage: "ID",
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return fmt.Errorf("revoke takes one key ID")
					}
					client, out, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					return RevokeKey(c.Context, client, out, c.Args().First())
				},
			},
			{
				Name: "rotate", Usage: "replace an API key by a new one and print it once; the old one works until the grace ends", ArgsUsage: "ID",
				Flags: []cli.Flag{&cli.DurationFlag{Name: "grace", Value: 24 * time.Hour, Usage: "how long the old key keeps working"}},
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return fmt.Errorf("rotate takes one key ID")
					}
					client, out, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					return RotateKey(c.Context, client, out, envOf(c).Stderr, c.Args().First(), c.Duration("grace"))
				},
			},
		},
	}
}

func durationOf(d time.Duration) fsm.Duration { return fsm.Duration(d) }

// keyPath is the API path of a key.
func keyPath(id string) string { return "/v1/keys/" + url.PathEscape(id) }

// ListKeys prints the keys the caller may see, of one user if user is set.
func ListKeys(ctx context.Context, c *Client, out Output, user string) error {
	var q url.Values
	if user != "" {
		q = url.Values{"user": {user}}
	}
	var r struct {
		Keys []server.KeyView `json:"keys"`
	}
	if err := c.do(ctx, "GET", "/v1/keys", q, nil, &r); err != nil {
		return err
	}
	if out.JSON {
		return printJSON(out.W, r.Keys)
	}
	tw := tabwriter.NewWriter(out.W, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tUSER\tTENANT\tROLE\tNAME\tSCOPES\tSTATE\tEXPIRES\tLAST USED")
	for _, k := range r.Keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cell(k.ID), dash(k.User), cell(k.TenantID), cell(string(k.Role)),
			dash(k.Name), dash(strings.Join(k.Scopes, ",")), cell(k.State), timeOrDash(k.ExpiresAt), timeOrDash(k.LastUsedAt))
	}
	return tw.Flush()
}

func timeOrDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Local().Format(time.RFC3339)
}

// RevokeKey revokes a key.
func RevokeKey(ctx context.Context, c *Client, out Output, id string) error {
	var k server.KeyView
	if err := c.do(ctx, "DELETE", keyPath(id), nil, nil, &k); err != nil {
		return err
	}
	if out.JSON {
		return printJSON(out.W, k)
	}
	_, err := fmt.Fprintf(out.W, "revoked key %s of %s\n", cell(k.ID), dash(k.User))
	return err
}

// RotateKey rotates a key and prints the new one as CreateKey does.
func RotateKey(ctx context.Context, c *Client, out Output, info io.Writer, id string, grace time.Duration) error {
	g := durationOf(grace)
	var nk server.NewKey
	if err := c.do(ctx, "POST", keyPath(id)+"/rotate", nil, server.RotateKeyRequest{Grace: &g}, &nk); err != nil {
		return err
	}
	summary := keySummary(&nk.Key)
	if nk.Previous != nil {
		summary += "; the old key " + cell(nk.Previous.ID) + " works until " + timeOrDash(nk.Previous.ExpiresAt)
	}
	return printSecret(out, info, nk, nk.APIKey, summary)
}
