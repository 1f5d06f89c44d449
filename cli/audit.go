package cli

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
	"github.com/ffrtmp/ffrtmp/store"
	"github.com/ffrtmp/ffrtmp/store/bolt"
)

func auditCommand() *cli.Command {
	return &cli.Command{
		Name:  "audit",
		Usage: "read and verify the audit log",
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "list audit records, newest first (a tenant admin sees its own tenant's; a super-admin every tenant's, or --tenant's)",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "actor", Usage: "only records of this user or key ID"},
					&cli.StringFlag{Name: "action", Usage: "only records of this action (an operationId, e.g. submitJob)"},
					&cli.StringFlag{Name: "since", Usage: "only records at or after this time (RFC 3339, or a duration ago such as 24h)"},
					&cli.StringFlag{Name: "until", Usage: "only records before this time (RFC 3339, or a duration ago)"},
					&cli.IntFlag{Name: "limit", Value: server.DefaultPageSize, Usage: fmt.Sprintf("records per page (1 to %d)", server.MaxPageSize)},
					&cli.StringFlag{Name: "after", Usage: "the cursor a previous page printed: list the records after it"},
				},
				Action: func(c *cli.Context) error {
					client, out, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					q := url.Values{}
					for _, f := range []string{"actor", "action"} {
						if v := c.String(f); v != "" {
							q.Set(f, v)
						}
					}
					for _, f := range []string{"since", "until"} {
						if v := c.String(f); v != "" {
							t, err := parseWhen(v, time.Now())
							if err != nil {
								return fmt.Errorf("--%s: %w", f, err)
							}
							q.Set(f, t.Format(time.RFC3339Nano))
						}
					}
					q.Set("limit", strconv.Itoa(c.Int("limit")))
					if v := c.String("after"); v != "" {
						q.Set("cursor", v)
					}
					return ListAudit(c.Context, client, q, out, envOf(c))
				},
			},
			{
				Name: "verify",
				Usage: "recompute the audit chain from the store; exits non-zero naming the first altered, removed or reordered record. " +
					"With --data-dir or --store it reads the store itself (the node stopped, or the cluster down) with the cluster key",
				Flags: []cli.Flag{
					&cli.StringSliceFlag{Name: "head", Usage: "a head an earlier verify printed (SEQ:HASH) that the chain must still reach (repeatable)"},
					&cli.StringFlag{Name: "data-dir", Usage: "offline: a stopped node's data directory (its state.db)"},
					&cli.StringFlag{Name: "store", Usage: "offline: the store URL (postgres://... or bolt://...)"},
					&cli.StringFlag{Name: "cluster-key-file", Usage: "offline: the cluster key file, from which the audit key is derived"},
				},
				Action: func(c *cli.Context) error {
					out, err := outputOf(c)
					if err != nil {
						return err
					}
					var heads []fsm.AuditHead
					for _, v := range c.StringSlice("head") {
						h, err := fsm.ParseAuditHead(v)
						if err != nil {
							return fmt.Errorf("%w: --head: %w", ErrConfig, err)
						}
						heads = append(heads, *h)
					}
					if c.String("data-dir") != "" || c.String("store") != "" {
						return VerifyAuditOffline(c.Context, c.String("data-dir"), c.String("store"), c.String("cluster-key-file"), heads, out)
					}
					client, err := clientFrom(c)
					if err != nil {
						return err
					}
					return VerifyAudit(c.Context, client, heads, out)
				},
			},
		},
	}
}

// outputOf is the command's Output without a client.
func outputOf(c *cli.Context) (Output, error) {
	js, err := outputJSON(c)
	return Output{W: envOf(c).Stdout, JSON: js}, err
}

// parseWhen reads a time as RFC 3339, or as a duration before now.
func parseWhen(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration such as 24h", v)
	}
	return now.Add(-d), nil
}

// ListAudit prints one page of audit records; in table mode the cursor of
// the next page goes to stderr.
func ListAudit(ctx context.Context, c *Client, q url.Values, out Output, env Env) error {
	if c.tenant != "" {
		q.Set("tenant", c.tenant)
	}
	var page server.AuditPage
	if err := c.do(ctx, "GET", "/v1/audit", q, nil, &page); err != nil {
		return err
	}
	if out.JSON {
		return printJSON(out.W, page)
	}
	tw := tabwriter.NewWriter(out.W, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tUSER\tKEY\tACTION\tTARGET\tTENANT\tRESULT\tREQUEST")
	for _, r := range page.Records {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Seq, r.Time.Local().Format(time.RFC3339), dash(r.User), dash(r.KeyID),
			cell(r.Action), dash(r.Target), dash(r.Tenant), cell(string(r.Result)), dash(r.RequestID))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if page.Next != "" {
		fmt.Fprintf(env.Stderr, "more: --after %s\n", page.Next)
	}
	return nil
}

// ErrAuditBroken is returned when verification finds a bad record.
var ErrAuditBroken = errors.New("the audit chain is broken")

// VerifyAudit asks the cluster to verify its audit chain and prints the
// outcome; a broken chain is an error naming the first bad record.
func VerifyAudit(ctx context.Context, c *Client, heads []fsm.AuditHead, out Output) error {
	q := url.Values{}
	for _, h := range heads {
		q.Add("head", h.String())
	}
	var v server.AuditVerification
	if err := c.do(ctx, "GET", "/v1/audit/verify", q, nil, &v); err != nil {
		return err
	}
	return printVerification(v, out)
}

// VerifyAuditOffline verifies the audit chain by reading a store itself:
// a stopped node's bolt file (dataDir) or a store URL, with the audit key
// derived from the cluster key file.
func VerifyAuditOffline(ctx context.Context, dataDir, storeURL, keyFile string, heads []fsm.AuditHead, out Output) error {
	if keyFile == "" {
		return fmt.Errorf("%w: offline verification needs --cluster-key-file", ErrConfig)
	}
	key, err := cluster.ReadKeyFile(keyFile)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	var st fsm.Store
	switch {
	case dataDir != "" && storeURL != "":
		return fmt.Errorf("%w: give --data-dir or --store, not both", ErrConfig)
	case dataDir != "":
		st, err = bolt.OpenReadOnly(filepath.Join(dataDir, "state.db"))
	case strings.HasPrefix(storeURL, "bolt://"):
		st, err = bolt.OpenReadOnly(storeURL[len("bolt://"):])
	default:
		st, err = store.OpenPostgres(ctx, storeURL)
	}
	if err != nil {
		return err
	}
	defer st.Close()
	v, err := fsm.VerifyAudit(ctx, st, cluster.AuditKey(key), heads...)
	if err != nil {
		return err
	}
	return printVerification(server.AuditVerificationOf(v), out)
}

func printVerification(v server.AuditVerification, out Output) error {
	if out.JSON {
		if err := printJSON(out.W, v); err != nil {
			return err
		}
	} else if v.OK {
		fmt.Fprintf(out.W, "ok: %d records verified\nhead: %s\n(keep the head; `ffrtmp audit verify --head %s` later proves no newer record was removed)\n", v.Checked, v.Head.Text, v.Head.Text)
	} else {
		fmt.Fprintf(out.W, "BROKEN after %d sound records (head %s)\n", v.Head.Seq, v.Head.Text)
	}
	if !v.OK {
		return fmt.Errorf("%w: record %d: %s", ErrAuditBroken, v.FirstBad.Seq, v.FirstBad.Reason)
	}
	return nil
}
