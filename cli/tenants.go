package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ffrtmp/ffrtmp/server"
)

// limitFlags are the quota flags of tenants create and update; 0 is
// unlimited.
var limitFlags = []cli.Flag{
	&cli.IntFlag{Name: "max-jobs", Usage: "most active (queued, assigned, running, paused) jobs; 0 is unlimited"},
	&cli.IntFlag{Name: "max-concurrent-jobs", Usage: "most jobs holding a worker (assigned, running, paused); 0 is unlimited"},
	&cli.IntFlag{Name: "max-workers", Usage: "most dedicated workers up; 0 is unlimited"},
	&cli.Float64Flag{Name: "max-cpu", Usage: "most resources.cpu summed over the jobs holding a worker; 0 is unlimited"},
}

func tenantsCommand() *cli.Command {
	return &cli.Command{
		Name:  "tenants",
		Usage: "manage tenants and their quotas",
		Subcommands: []*cli.Command{
			{
				Name:  "create",
				Usage: "create a tenant (super-admin); its name is its ID",
				Flags: append([]cli.Flag{
					&cli.StringFlag{Name: "name", Required: true, Usage: "the tenant's name and ID: lower-case letters, digits, '-' and '_'"},
					&cli.StringFlag{Name: "plan", Usage: "a plan name, for the operator's records"},
					&cli.BoolFlag{Name: "migrate-existing", Usage: "give the tenant every job and dedicated worker without one; an existing tenant is then fine"},
					&cli.StringFlag{Name: "retention", Usage: "keep finished jobs this long, e.g. 2160h (0s: forever; default: the installation's --retention)"},
				}, limitFlags...),
				Action: func(c *cli.Context) error {
					client, out, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					req := server.CreateTenantRequest{Name: c.String("name"), Plan: c.String("plan"), MigrateExisting: c.Bool("migrate-existing"), Retention: c.String("retention"),
						Limits: server.TenantLimits{MaxJobs: c.Int("max-jobs"), MaxConcurrentJobs: c.Int("max-concurrent-jobs"),
							MaxWorkers: c.Int("max-workers"), MaxCPU: c.Float64("max-cpu")}}
					return CreateTenant(c.Context, client, out, envOf(c).Stderr, req)
				},
			},
			{
				Name:  "list",
				Usage: "list tenants (a tenant admin sees its own)",
				Action: func(c *cli.Context) error {
					client, out, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					return ListTenants(c.Context, client, out)
				},
			},
			{
				Name: "get", Usage: "show a tenant", ArgsUsage: "ID",
				Action: func(c *cli.Context) error {
					return tenantAction(c, func(ctx context.Context, client *Client, out Output, id string) error {
						return GetTenant(ctx, client, out, id)
					})
				},
			},
			{
				Name: "usage", Usage: "show a tenant's usage against each of its limits", ArgsUsage: "ID",
				Action: func(c *cli.Context) error {
					return tenantAction(c, func(ctx context.Context, client *Client, out Output, id string) error {
						return TenantUsage(ctx, client, out, id)
					})
				},
			},
			{
				Name: "update", Usage: "change a tenant's plan, limits or state (super-admin)", ArgsUsage: "ID",
				Flags: append([]cli.Flag{
					&cli.StringFlag{Name: "plan", Usage: "a plan name"},
					&cli.BoolFlag{Name: "disable", Usage: "stop the tenant's keys and new jobs"},
					&cli.BoolFlag{Name: "enable", Usage: "undo --disable"},
					&cli.StringFlag{Name: "retention", Usage: "keep finished jobs this long, e.g. 2160h (0s: forever; \"default\": the installation's --retention)"},
				}, limitFlags...),
				Action: func(c *cli.Context) error {
					req, err := updateRequest(c)
					if err != nil {
						return err
					}
					return tenantAction(c, func(ctx context.Context, client *Client, out Output, id string) error {
						return UpdateTenant(ctx, client, out, id, req)
					})
				},
			},
			{
				Name: "delete", Usage: "delete a tenant without active jobs (super-admin); its name is not reused", ArgsUsage: "ID",
				Action: func(c *cli.Context) error {
					return tenantAction(c, func(ctx context.Context, client *Client, out Output, id string) error {
						if err := client.do(ctx, "DELETE", "/v1/tenants/"+url.PathEscape(id), nil, nil, nil); err != nil {
							return err
						}
						fmt.Fprintf(envOf(c).Stderr, "tenant %s deleted\n", id)
						return nil
					})
				},
			},
		},
	}
}

// tenantAction runs fn for a command that takes one tenant ID.
func tenantAction(c *cli.Context, fn func(ctx context.Context, client *Client, out Output, id string) error) error {
	if c.NArg() != 1 {
		return fmt.Errorf("%s takes one tenant ID", c.Command.Name)
	}
	client, out, err := clientAndOutput(c)
	if err != nil {
		return err
	}
	return fn(c.Context, client, out, c.Args().First())
}

// updateRequest builds the body of tenants update from the flags given.
func updateRequest(c *cli.Context) (server.UpdateTenantRequest, error) {
	var req server.UpdateTenantRequest
	if c.IsSet("plan") {
		p := c.String("plan")
		req.Plan = &p
	}
	switch {
	case c.Bool("disable") && c.Bool("enable"):
		return req, fmt.Errorf("--disable and --enable exclude each other")
	case c.Bool("disable"):
		req.Disabled = new(true)
	case c.Bool("enable"):
		req.Disabled = new(false)
	}
	var l server.TenantLimitsPatch
	for name, p := range map[string]**int{"max-jobs": &l.MaxJobs, "max-concurrent-jobs": &l.MaxConcurrentJobs, "max-workers": &l.MaxWorkers} {
		if c.IsSet(name) {
			*p = new(c.Int(name))
		}
	}
	if c.IsSet("max-cpu") {
		l.MaxCPU = new(c.Float64("max-cpu"))
	}
	if l != (server.TenantLimitsPatch{}) {
		req.Limits = &l
	}
	if c.IsSet("retention") {
		req.Retention = new(c.String("retention"))
	}
	if req.Plan == nil && req.Disabled == nil && req.Limits == nil && req.Retention == nil {
		return req, fmt.Errorf("nothing to update: give --plan, a limit, --retention, --disable or --enable")
	}
	return req, nil
}

// CreateTenant creates a tenant. With MigrateExisting an existing tenant
// is reported on stderr and is not an error; what was adopted is
// reported there too.
func CreateTenant(ctx context.Context, c *Client, out Output, stderr io.Writer, req server.CreateTenantRequest) error {
	resp, err := c.request(ctx, "POST", "/v1/tenants", nil, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var t server.Tenant
	if err := decodeJSON(resp.Body, &t); err != nil {
		return err
	}
	if resp.StatusCode == http.StatusOK {
		fmt.Fprintf(stderr, "tenant %s already exists\n", t.ID)
	}
	if a := t.Adopted; a != nil {
		fmt.Fprintf(stderr, "adopted %d jobs and %d dedicated workers without a tenant\n", a.Jobs, a.Workers)
	}
	return printTenant(out, t)
}

// ListTenants prints the tenants the caller may see.
func ListTenants(ctx context.Context, c *Client, out Output) error {
	var list struct {
		Tenants []server.Tenant `json:"tenants"`
	}
	if err := c.do(ctx, "GET", "/v1/tenants", nil, nil, &list); err != nil {
		return err
	}
	if out.JSON {
		return printJSON(out.W, list.Tenants)
	}
	tw := tabwriter.NewWriter(out.W, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPLAN\tSTATE\tMAX JOBS\tMAX CONCURRENT\tMAX WORKERS\tMAX CPU\tCREATED")
	for _, t := range list.Tenants {
		l := t.Limits
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cell(t.ID), dash(t.Plan), tenantState(t), limit(float64(l.MaxJobs)),
			limit(float64(l.MaxConcurrentJobs)), limit(float64(l.MaxWorkers)), limit(l.MaxCPU), t.CreatedAt.Local().Format(time.RFC3339))
	}
	return tw.Flush()
}

// GetTenant prints one tenant.
func GetTenant(ctx context.Context, c *Client, out Output, id string) error {
	var t server.Tenant
	if err := c.do(ctx, "GET", "/v1/tenants/"+url.PathEscape(id), nil, nil, &t); err != nil {
		return err
	}
	return printTenant(out, t)
}

// UpdateTenant changes a tenant and prints it.
func UpdateTenant(ctx context.Context, c *Client, out Output, id string, req server.UpdateTenantRequest) error {
	var t server.Tenant
	if err := c.do(ctx, "PATCH", "/v1/tenants/"+url.PathEscape(id), nil, req, &t); err != nil {
		return err
	}
	return printTenant(out, t)
}

// TenantUsage prints a tenant's usage against each of its limits.
func TenantUsage(ctx context.Context, c *Client, out Output, id string) error {
	var u server.TenantUsage
	if err := c.do(ctx, "GET", "/v1/tenants/"+url.PathEscape(id)+"/usage", nil, nil, &u); err != nil {
		return err
	}
	if out.JSON {
		return printJSON(out.W, u)
	}
	tw := tabwriter.NewWriter(out.W, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "QUOTA\tUSAGE\tLIMIT")
	for _, q := range []struct {
		name string
		q    server.Quota
	}{{"max_jobs", u.Jobs}, {"max_concurrent_jobs", u.ConcurrentJobs}, {"max_workers", u.Workers}, {"max_cpu", u.CPU}} {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", q.name, strconv.FormatFloat(q.q.Usage, 'f', -1, 64), limit(q.q.Limit))
	}
	return tw.Flush()
}

func printTenant(out Output, t server.Tenant) error {
	if out.JSON {
		return printJSON(out.W, t)
	}
	l := t.Limits
	tw := tabwriter.NewWriter(out.W, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Name:\t%s\nPlan:\t%s\nState:\t%s\nMax jobs:\t%s\nMax concurrent jobs:\t%s\nMax workers:\t%s\nMax CPU:\t%s\nRetention:\t%s\nCreated:\t%s\nCreated by:\t%s\n",
		cell(t.ID), dash(t.Plan), tenantState(t), limit(float64(l.MaxJobs)), limit(float64(l.MaxConcurrentJobs)),
		limit(float64(l.MaxWorkers)), limit(l.MaxCPU), retentionCell(t.Retention), t.CreatedAt.Local().Format(time.RFC3339), dash(t.CreatedBy))
	return tw.Flush()
}

// retentionCell formats a tenant's retention.
func retentionCell(r string) string {
	switch r {
	case "":
		return "installation default"
	case "0s":
		return "forever"
	}
	return r
}

func tenantState(t server.Tenant) string {
	if t.Disabled {
		return "disabled"
	}
	return "active"
}

// limit formats a limit; 0 is unlimited.
func limit(v float64) string {
	if v == 0 {
		return "unlimited"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}
