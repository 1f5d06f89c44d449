package cli

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
)

func whoamiCommand() *cli.Command {
	return &cli.Command{
		Name:  "whoami",
		Usage: "show who the API key is: user, key, tenant, role, scopes, permissions and expiry",
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return fmt.Errorf("whoami takes no arguments")
			}
			client, out, err := clientAndOutput(c)
			if err != nil {
				return err
			}
			return Whoami(c.Context, client, out)
		},
	}
}

// Whoami prints the principal the client's API key authenticates as.
func Whoami(ctx context.Context, c *Client, out Output) error {
	w, err := c.Whoami(ctx)
	if err != nil {
		return err
	}
	if out.JSON {
		return printJSON(out.W, w)
	}
	expires := "never"
	if w.ExpiresAt != nil {
		expires = w.ExpiresAt.Local().Format(time.RFC3339)
	}
	perms := make([]string, len(w.Permissions))
	for i, p := range w.Permissions {
		perms[i] = string(p)
	}
	tenant := dash(w.Tenant.ID)
	if w.Tenant.Name != "" {
		tenant = cell(w.Tenant.Name) + " (" + tenant + ")"
	}
	scopes := "all of the role"
	if len(w.Scopes) > 0 {
		s := make([]string, len(w.Scopes))
		for i, p := range w.Scopes {
			s[i] = string(p)
		}
		scopes = strings.Join(s, ", ")
	}
	tw := tabwriter.NewWriter(out.W, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "User:\t%s\nUser ID:\t%s\nKey ID:\t%s\nTenant:\t%s\nRole:\t%s\nScopes:\t%s\nPermissions:\t%s\nExpires:\t%s\n",
		dash(w.User), dash(w.UserID), cell(w.KeyID), tenant, cell(string(w.Role)), cell(scopes), cell(strings.Join(perms, ", ")), expires)
	return tw.Flush()
}
