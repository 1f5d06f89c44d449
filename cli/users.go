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

// This file is `ffrtmp users`: users, their keys and invitations. A
// secret shown once (an API key, an invitation token) is printed alone on
// stdout's first line in table mode, everything else about it on stderr,
// so that KEY=$(ffrtmp users create-key --user x@example.com) works.

func usersCommand() *cli.Command {
	return &cli.Command{
		Name:  "users",
		Usage: "manage users, their API keys and invitations",
		Subcommands: []*cli.Command{
			{
				Name:  "create",
				Usage: "create a user of the tenant (--tenant; default: your own)",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "email", Required: true, Usage: "the user's email, unique in the installation"},
					&cli.StringFlag{Name: "role", Required: true, Usage: "superadmin, tenant_admin (admin), operator or viewer"},
				},
				Action: func(c *cli.Context) error {
					client, out, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					return CreateUser(c.Context, client, out, c.String("email"), c.String("role"))
				},
			},
			{
				Name:  "list",
				Usage: "list users (a super-admin sees every tenant's unless --tenant)",
				Action: func(c *cli.Context) error {
					client, out, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					return ListUsers(c.Context, client, out)
				},
			},
			userAction("get", "show a user", nil),
			userAction("disable", "disable a user: all its keys stop working at once", ptr(true)),
			userAction("enable", "enable a disabled user", ptr(false)),
			{
				Name:      "set-role",
				Usage:     "change a user's role (within your own; never your own role)",
				ArgsUsage: "ID-or-EMAIL ROLE",
				Action: func(c *cli.Context) error {
					if c.NArg() != 2 {
						return fmt.Errorf("set-role takes a user ID or email and a role")
					}
					client, out, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					return SetRole(c.Context, client, out, c.Args().Get(0), c.Args().Get(1))
				},
			},
			{
				Name:  "invitations",
				Usage: "list the tenant's invitations and their state",
				Action: func(c *cli.Context) error {
					client, out, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					return ListInvitations(c.Context, client, out)
				},
			},
			{
				Name:      "revoke-invite",
				Usage:     "revoke an invitation that was not used yet",
				ArgsUsage: "ID",
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return fmt.Errorf("revoke-invite takes one invitation ID")
					}
					client, _, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					id := c.Args().First()
					if err := client.do(c.Context, "DELETE", "/v1/invitations/"+url.PathEscape(id), nil, nil, nil); err != nil {
						return err
					}
					fmt.Fprintf(envOf(c).Stderr, "invitation %s revoked\n", cell(id))
					return nil
				},
			},
			{
				Name:  "create-key",
				Usage: "create an API key for a user and print it once",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "user", Required: true, Usage: "the user's ID or email"},
					&cli.DurationFlag{Name: "expires", DefaultText: "never", Usage: "the key's lifetime, such as 720h"},
					&cli.StringFlag{Name: "scopes", Usage: "comma-separated permissions that narrow the user's role, such as jobs.view,jobs.create"},
					&cli.StringFlag{Name: "name", Usage: "a label for the key"},
				},
				Action: func(c *cli.Context) error {
					client, out, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					req := server.CreateKeyRequest{Name: c.String("name"), Scopes: splitList([]string{c.String("scopes")})}
					req.Expires = durationOf(c.Duration("expires"))
					return CreateKey(c.Context, client, out, envOf(c).Stderr, c.String("user"), req)
				},
			},
			{
				Name:  "invite",
				Usage: "invite an email with a role and print the one-time token",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "email", Required: true, Usage: "the email to invite; accepting makes the user with it"},
					&cli.StringFlag{Name: "role", Required: true, Usage: "superadmin, tenant_admin (admin), operator or viewer"},
					&cli.DurationFlag{Name: "ttl", Value: 72 * time.Hour, Usage: "how long the token can be accepted (1m to 720h)"},
				},
				Action: func(c *cli.Context) error {
					client, out, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					req := server.CreateInvitationRequest{Email: c.String("email"), Role: c.String("role"), TTL: durationOf(c.Duration("ttl"))}
					return Invite(c.Context, client, out, envOf(c).Stderr, req)
				},
			},
			{
				Name:      "accept-invite",
				Usage:     "accept an invitation (no API key needed) and print the new user's key once",
				ArgsUsage: "TOKEN",
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return fmt.Errorf("accept-invite takes one invitation token")
					}
					client, out, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					return AcceptInvite(c.Context, client, out, envOf(c).Stderr, c.Args().First())
				},
			},
		},
	}
}

func ptr[T any](v T) *T { return &v }

// userPath is the API path of the user ref names (an ID or an email).
func userPath(ref string) string { return "/v1/users/" + url.PathEscape(ref) }

// CreateUser creates a user of the client's tenant.
func CreateUser(ctx context.Context, c *Client, out Output, email, role string) error {
	var u server.UserView
	if err := c.do(ctx, "POST", "/v1/users", nil, server.CreateUserRequest{Email: email, Role: role}, &u); err != nil {
		return err
	}
	return printUser(out, &u)
}

// ListUsers prints the users the caller may see.
func ListUsers(ctx context.Context, c *Client, out Output) error {
	var r struct {
		Users []server.UserView `json:"users"`
	}
	if err := c.do(ctx, "GET", "/v1/users", nil, nil, &r); err != nil {
		return err
	}
	if out.JSON {
		return printJSON(out.W, r.Users)
	}
	tw := tabwriter.NewWriter(out.W, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tEMAIL\tTENANT\tROLE\tDISABLED\tCREATED")
	for _, u := range r.Users {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\n", cell(u.ID), cell(u.Email), cell(u.TenantID), cell(string(u.Role)),
			u.Disabled, u.CreatedAt.Local().Format(time.RFC3339))
	}
	return tw.Flush()
}

// userAction is get (disabled nil), disable or enable of one user.
func userAction(name, usage string, disabled *bool) *cli.Command {
	return &cli.Command{
		Name: name, Usage: usage, ArgsUsage: "ID-or-EMAIL",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("%s takes one user ID or email", name)
			}
			client, out, err := clientAndOutput(c)
			if err != nil {
				return err
			}
			return UserAction(c.Context, client, out, c.Args().First(), disabled)
		},
	}
}

// UserAction shows a user or, with disabled set, disables or enables it.
func UserAction(ctx context.Context, c *Client, out Output, ref string, disabled *bool) error {
	var u server.UserView
	var err error
	if disabled == nil {
		err = c.do(ctx, "GET", userPath(ref), nil, nil, &u)
	} else {
		err = c.do(ctx, "PATCH", userPath(ref), nil, server.UpdateUserRequest{Disabled: disabled}, &u)
	}
	if err != nil {
		return err
	}
	return printUser(out, &u)
}

// SetRole changes the role of the user ref names.
func SetRole(ctx context.Context, c *Client, out Output, ref, role string) error {
	var u server.UserView
	if err := c.do(ctx, "PATCH", userPath(ref), nil, server.UpdateUserRequest{Role: role}, &u); err != nil {
		return err
	}
	return printUser(out, &u)
}

// ListInvitations prints the invitations the caller may see.
func ListInvitations(ctx context.Context, c *Client, out Output) error {
	var r struct {
		Invitations []server.InvitationView `json:"invitations"`
	}
	if err := c.do(ctx, "GET", "/v1/invitations", nil, nil, &r); err != nil {
		return err
	}
	if out.JSON {
		return printJSON(out.W, r.Invitations)
	}
	tw := tabwriter.NewWriter(out.W, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tEMAIL\tTENANT\tROLE\tSTATE\tEXPIRES")
	for _, inv := range r.Invitations {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", cell(inv.ID), cell(inv.Email), cell(inv.TenantID), cell(string(inv.Role)),
			cell(inv.State), inv.ExpiresAt.Local().Format(time.RFC3339))
	}
	return tw.Flush()
}

func printUser(out Output, u *server.UserView) error {
	if out.JSON {
		return printJSON(out.W, u)
	}
	tw := tabwriter.NewWriter(out.W, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ID:\t%s\nEmail:\t%s\nTenant:\t%s\nRole:\t%s\nDisabled:\t%v\nCreated:\t%s\nCreated by:\t%s\n",
		cell(u.ID), cell(u.Email), cell(u.TenantID), cell(string(u.Role)), u.Disabled,
		u.CreatedAt.Local().Format(time.RFC3339), dash(u.CreatedBy))
	return tw.Flush()
}

// CreateKey creates a key for the user ref names and prints its token:
// alone on out's first line in table mode, the key's details on info.
func CreateKey(ctx context.Context, c *Client, out Output, info io.Writer, ref string, req server.CreateKeyRequest) error {
	var nk server.NewKey
	if err := c.do(ctx, "POST", userPath(ref)+"/keys", nil, req, &nk); err != nil {
		return err
	}
	return printSecret(out, info, nk, nk.APIKey, keySummary(&nk.Key))
}

// printSecret prints v as JSON, or in table mode the secret alone on
// out's first line and what else there is to say on info.
func printSecret(out Output, info io.Writer, v any, secret, summary string) error {
	if out.JSON {
		return printJSON(out.W, v)
	}
	if _, err := fmt.Fprintln(out.W, secret); err != nil {
		return err
	}
	fmt.Fprintln(info, summary+" (shown once: store it now)")
	return nil
}

func keySummary(k *server.KeyView) string {
	expires := "never"
	if k.ExpiresAt != nil {
		expires = k.ExpiresAt.Local().Format(time.RFC3339)
	}
	scopes := "all of the role"
	if len(k.Scopes) > 0 {
		scopes = strings.Join(k.Scopes, ",")
	}
	return fmt.Sprintf("key %s for %s (%s, tenant %s), scopes %s, expires %s", cell(k.ID), cell(k.User), cell(string(k.Role)),
		cell(k.TenantID), cell(scopes), expires)
}

// Invite creates an invitation and prints its token as CreateKey does.
func Invite(ctx context.Context, c *Client, out Output, info io.Writer, req server.CreateInvitationRequest) error {
	var ni server.NewInvitation
	if err := c.do(ctx, "POST", "/v1/invitations", nil, req, &ni); err != nil {
		return err
	}
	inv := ni.Invitation
	return printSecret(out, info, ni, ni.Token, fmt.Sprintf("invitation %s for %s as %s of tenant %s, accept with `ffrtmp users accept-invite TOKEN` before %s",
		cell(inv.ID), cell(inv.Email), cell(string(inv.Role)), cell(inv.TenantID), inv.ExpiresAt.Local().Format(time.RFC3339)))
}

// AcceptInvite accepts an invitation and prints the new user's key as
// CreateKey does.
func AcceptInvite(ctx context.Context, c *Client, out Output, info io.Writer, token string) error {
	var a server.Accepted
	if err := c.do(ctx, "POST", "/v1/invitations/accept", nil, server.AcceptInvitationRequest{Token: strings.TrimSpace(token)}, &a); err != nil {
		return err
	}
	return printSecret(out, info, a, a.APIKey, "welcome, "+cell(a.User.Email)+": "+keySummary(&a.Key))
}
