package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

func keygenCommand() *cli.Command {
	return &cli.Command{
		Name:  "keygen",
		Usage: "print a new random cluster key (the servers' shared secret: join token, node TLS and gossip key root)",
		Action: func(c *cli.Context) error {
			_, err := fmt.Fprintln(envOf(c).Stdout, cluster.GenerateKey())
			return err
		},
	}
}

func clusterCommand() *cli.Command {
	nodeArg := func(name, usage string, optional bool, path string) *cli.Command {
		return &cli.Command{
			Name: name, Usage: usage, ArgsUsage: "NODE",
			Action: func(c *cli.Context) error {
				if c.NArg() > 1 || (!optional && c.NArg() != 1) {
					return fmt.Errorf("%s takes one node ID", name)
				}
				client, out, err := clientAndOutput(c)
				if err != nil {
					return err
				}
				return ClusterOp(c.Context, client, out, path, map[string]any{"node": c.Args().First()})
			},
		}
	}
	return &cli.Command{
		Name:  "cluster",
		Usage: "operate the Raft cluster (super-admin)",
		Subcommands: []*cli.Command{
			{
				Name:  "init",
				Usage: "create the first super-admin API key of a new cluster (once); saves it to the CLI config",
				Flags: clusterKeyFlags,
				Action: func(c *cli.Context) error {
					key, err := clusterKey(c)
					if err != nil {
						return err
					}
					client, out, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					return ClusterInit(c.Context, client, out, key, envOf(c).Getenv)
				},
			},
			{
				Name: "join", Usage: "make the node at --addr join the cluster that ADDR (a member's Raft address) belongs to; prints the membership",
				Description: "Run it against the new node (--addr or FFRTMP_ADDR is the new node's API). A node that belongs\n" +
					"to no cluster yet accepts the cluster key file (--cluster-key-file) or a super-admin API key,\n" +
					"which it has the cluster verify; a member needs a super-admin API key. Joining again is a no-op.",
				ArgsUsage: "ADDR...",
				Flags:     clusterKeyFlags,
				Action: func(c *cli.Context) error {
					if c.NArg() < 1 {
						return errors.New("join takes the Raft address of a cluster node")
					}
					var key []byte
					if c.IsSet("cluster-key") || c.IsSet("cluster-key-file") {
						k, err := clusterKey(c)
						if err != nil {
							return err
						}
						key = k
					}
					client, out, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					return ClusterJoin(c.Context, client, out, key, c.Args().Slice())
				},
			},
			{
				Name: "members", Usage: "list the cluster's servers",
				Action: func(c *cli.Context) error {
					client, out, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					return ClusterStatusCmd(c.Context, client, out, false)
				},
			},
			{
				Name: "status", Usage: "leader, term and indexes of every server, and their health",
				Action: func(c *cli.Context) error {
					client, out, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					return ClusterStatusCmd(c.Context, client, out, true)
				},
			},
			nodeArg("remove", "remove a server from the cluster", false, "/v1/cluster/remove"),
			nodeArg("transfer-leadership", "hand leadership to NODE (or to any follower)", true, "/v1/cluster/transfer-leadership"),
			{
				Name: "leave", Usage: "remove the node at --addr from the cluster gracefully and stop it",
				Action: func(c *cli.Context) error {
					client, out, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					var r map[string]string
					if err := client.do(c.Context, "POST", "/v1/cluster/leave", nil, struct{}{}, &r); err != nil {
						return err
					}
					if out.JSON {
						return printJSON(out.W, r)
					}
					_, err = fmt.Fprintf(out.W, "node %s left the cluster\n", r["node"])
					return err
				},
			},
			{
				Name:  "snapshot",
				Usage: "back up and restore the cluster's state",
				Subcommands: []*cli.Command{
					{
						Name: "save", Usage: "write a consistent backup to FILE", ArgsUsage: "FILE",
						Action: func(c *cli.Context) error {
							if c.NArg() != 1 {
								return errors.New("snapshot save takes a file name")
							}
							client, out, err := clientAndOutput(c)
							if err != nil {
								return err
							}
							return SnapshotSave(c.Context, client, out, c.Args().First())
						},
					},
					{
						Name: "restore", Usage: "replace the whole cluster's state with the backup in FILE", ArgsUsage: "FILE",
						Action: func(c *cli.Context) error {
							if c.NArg() != 1 {
								return errors.New("snapshot restore takes a file name")
							}
							client, out, err := clientAndOutput(c)
							if err != nil {
								return err
							}
							return SnapshotRestore(c.Context, client, out, c.Args().First())
						},
					},
				},
			},
		},
	}
}

// ClusterInit creates the cluster's first key and saves it, with the
// address, to the CLI config file.
func ClusterInit(ctx context.Context, c *Client, out Output, key []byte, getenv func(string) string) error {
	resp, err := c.requestWith(ctx, "POST", "/v1/cluster/init", nil, struct{}{}, map[string]string{
		"X-Ffrtmp-Cluster-Proof": server.InitProof(key, time.Now()),
	})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var r struct {
		APIKey string `json:"api_key"`
		User   string `json:"user"`
		Tenant string `json:"tenant"`
	}
	if err := decodeJSON(resp.Body, &r); err != nil {
		return err
	}
	path, err := SaveConfig(getenv, &Config{Addr: c.addrs(), APIKey: r.APIKey})
	if err != nil {
		return err
	}
	if out.JSON {
		return printJSON(out.W, r)
	}
	_, err = fmt.Fprintf(out.W, "Created the first super-admin API key for user %s (shown once; saved to %s):\n\n    %s\n\n", r.User, path, r.APIKey)
	return err
}

// ClusterJoin asks the node c talks to to join the cluster of addrs and
// prints the membership once the join took effect. With a cluster key it
// sends a proof of it (which a node without a cluster accepts); the API
// key, if any, is sent as always.
func ClusterJoin(ctx context.Context, c *Client, out Output, key []byte, addrs []string) error {
	var header map[string]string
	if key != nil {
		header = map[string]string{"X-Ffrtmp-Cluster-Proof": server.JoinProof(key, time.Now())}
	}
	resp, err := c.requestWith(ctx, "POST", "/v1/cluster/join", nil, map[string]any{"addrs": addrs}, header)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var st server.ClusterStatus
	if err := decodeJSON(resp.Body, &st); err != nil {
		return err
	}
	return printMembers(out, &st, false)
}

// ClusterOp posts a membership operation and prints the members after it.
func ClusterOp(ctx context.Context, c *Client, out Output, path string, body any) error {
	var st server.ClusterStatus
	if err := c.do(ctx, "POST", path, nil, body, &st); err != nil {
		return err
	}
	return printMembers(out, &st, false)
}

// ClusterStatusCmd prints the cluster's members: with status, each
// server's state, term, indexes and health; without, the configuration
// with each server's last contact and applied index.
func ClusterStatusCmd(ctx context.Context, c *Client, out Output, status bool) error {
	var st server.ClusterStatus
	if err := c.do(ctx, "GET", "/v1/cluster/status", nil, nil, &st); err != nil {
		return err
	}
	return printMembers(out, &st, status)
}

func printMembers(out Output, st *server.ClusterStatus, status bool) error {
	if out.JSON {
		return printJSON(out.W, st)
	}
	tw := tabwriter.NewWriter(out.W, 0, 4, 2, ' ', 0)
	if !status {
		fmt.Fprintln(tw, "ID\tADDRESS\tVOTER\tLEADER\tLAST CONTACT\tAPPLIED")
		for _, m := range st.Members {
			contact, applied := "-", "-"
			if s := m.Status; s != nil {
				applied = fmt.Sprint(s.AppliedIndex)
				if s.State != "Leader" && s.LastContact != "" {
					contact = s.LastContact
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%s\t%s\n", m.ID, m.Addr, m.Voter, m.Leader, contact, applied)
		}
		return tw.Flush()
	}
	fmt.Fprintln(tw, "ID\tADDRESS\tGOSSIP\tVOTER\tSTATE\tTERM\tCOMMIT\tAPPLIED\tLAST CONTACT\tHEALTHY\tPROTOCOL")
	for _, m := range st.Members {
		if m.Status == nil {
			fmt.Fprintf(tw, "%s\t%s\t-\t%v\t-\t-\t-\t-\t-\tno (%s)\t-\n", m.ID, m.Addr, m.Voter, m.Error)
			continue
		}
		s := m.Status
		contact := s.LastContact
		if s.State == "Leader" || contact == "" {
			contact = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%d\t%d\t%d\t%s\t%s\t%d\n", m.ID, m.Addr, dash(s.GossipAddr), m.Voter, s.State, s.Term,
			s.CommitIndex, s.AppliedIndex, contact, yesNo(m.Healthy != nil && *m.Healthy), max(s.Protocol, 1))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	leader := st.Leader
	if leader == "" {
		leader = "none"
	}
	_, err := fmt.Fprintf(out.W, "leader: %s\ncluster: %s\n", leader, dash(st.ClusterID))
	return err
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// SnapshotSave writes a backup of the cluster's state to path.
func SnapshotSave(ctx context.Context, c *Client, out Output, path string) error {
	resp, err := c.request(ctx, "GET", "/v1/cluster/snapshot", nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	tmp, err := os.CreateTemp(filepath.Dir(path), ".ffrtmp-snapshot-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, resp.Body)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = checkSaved(tmp.Name())
	}
	if err != nil {
		return fmt.Errorf("save snapshot: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	_, err = fmt.Fprintf(out.W, "saved %d bytes to %s\n", n, path)
	return err
}

// checkSaved reads a downloaded snapshot through its checksum, so that a
// download cut short (the server failed mid-stream) is never kept as a
// backup. A server from before the snapshot envelope sends a bare state
// file, which is kept unchecked.
func checkSaved(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	if !fsm.IsSnapshotEnvelope(br) {
		return nil
	}
	_, payload, err := fsm.ReadSnapshot(br, "")
	if err == nil {
		_, err = io.Copy(io.Discard, payload)
	}
	return err
}

// SnapshotRestore uploads a backup and replaces the cluster's state.
func SnapshotRestore(ctx context.Context, c *Client, out Output, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	req, err := c.newRequest(ctx, "POST", "/v1/cluster/snapshot", nil, f)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var r map[string]any
	if err := decodeJSON(resp.Body, &r); err != nil {
		return err
	}
	if out.JSON {
		return printJSON(out.W, r)
	}
	_, err = fmt.Fprintf(out.W, "restored %s\n", path)
	return err
}
