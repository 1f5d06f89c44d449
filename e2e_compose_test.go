package main

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ffrtmp/ffrtmp/cli"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/postgres/pgtest"
)

// TestComposeFlow runs packaging/compose/compose.yaml's services as real
// processes on this machine, without Docker: its keygen script, its
// three servers on PostgreSQL with their command lines, its init.sh, and
// its two workers through their entrypoint, with the Compose network's
// fixed addresses mapped to free loopback ports and the volumes to
// directories. The cluster forms, init makes the first key and a token
// per worker, both workers register, and a job runs.
func TestComposeFlow(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	dbURL := pgtest.URL(t)
	bin := binary(t)
	dir := t.TempDir()
	b, err := os.ReadFile(filepath.Join("packaging", "compose", "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]struct {
			Entrypoint  []string          `yaml:"entrypoint"`
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
			Networks    yaml.Node         `yaml:"networks"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	// Compose's interpolation, with every variable unset.
	interpolate := func(s string) string {
		s = regexp.MustCompile(`\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}`).ReplaceAllString(s, "$1")
		return strings.ReplaceAll(s, "$$", "$")
	}
	// The Compose network's addresses become free loopback ports: the
	// servers' API (7070), node (7071) and gossip (7072) ports, the
	// workers' gossip port (7073).
	var repl []string
	// A server's API listens on all addresses (0.0.0.0:7070) of its own
	// host; here each gets its own loopback port, the one its fixed
	// address maps to. Its gossip address is by default its node address's
	// host with port 7072; here that is explicit.
	httpOf, gossipOf := map[string]string{}, map[string]string{}
	for name, s := range f.Services {
		var nets map[string]struct {
			IPv4 string `yaml:"ipv4_address"`
		}
		if s.Networks.Kind != yaml.MappingNode || s.Networks.Decode(&nets) != nil || nets["ffrtmp"].IPv4 == "" {
			continue
		}
		ip := nets["ffrtmp"].IPv4
		switch {
		case len(s.Command) > 0 && s.Command[0] == "server":
			httpOf[name], gossipOf[name] = freeAddr(t), "127.0.0.1:"+gossipPort(t)
			repl = append(repl, ip+":7070", httpOf[name], ip+":7071", freeAddr(t), ip+":7072", gossipOf[name])
		case len(s.Command) > 0 && s.Command[0] == "worker":
			repl = append(repl, ip+":7073", "127.0.0.1:"+gossipPort(t))
		}
	}
	repl = append(repl, "/keys", filepath.Join(dir, "keys"))
	local := strings.NewReplacer(repl...)
	// The scripts run `ffrtmp`: the binary under test.
	env := append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"), "XDG_CONFIG_HOME="+filepath.Join(dir, "keys", "admin"))
	for i, kv := range env {
		if strings.HasPrefix(kv, "FFRTMP_") {
			env[i] = "IGNORED_" + kv
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o700); err != nil {
		t.Fatal(err)
	}

	// run runs a service's command to its end.
	run := func(name string, args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
	}
	// start starts a long-running service, stopped (SIGTERM) at cleanup.
	start := func(name string, serviceEnv map[string]string, args ...string) {
		t.Helper()
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = slices.Clone(env)
		for k, v := range serviceEnv {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		log := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
			if t.Failed() {
				t.Logf("%s:\n%s", name, log.String())
			}
		})
	}

	// keygen: its script, without the chown to the image's user.
	keygen := f.Services["keygen"]
	script := regexp.MustCompile(`(?m)^\s*chown .*$`).ReplaceAllString(local.Replace(interpolate(strings.Join(keygen.Command, "\n"))), "")
	run("keygen", "sh", "-c", script)

	for _, name := range []string{"server1", "server2", "server3"} {
		s := f.Services[name]
		senv := map[string]string{}
		for k, v := range s.Environment {
			senv[k] = local.Replace(interpolate(v))
		}
		senv["FFRTMP_STORE"] = dbURL
		args := []string{bin}
		for _, a := range s.Command {
			a = strings.ReplaceAll(local.Replace(a), "/var/lib/ffrtmp", filepath.Join(dir, name))
			args = append(args, strings.ReplaceAll(a, "0.0.0.0:7070", httpOf[name]))
		}
		args = append(args, "--gossip-addr", gossipOf[name])
		start(name, senv, args...)
	}

	initScript, err := os.ReadFile(filepath.Join("packaging", "compose", "init.sh"))
	if err != nil {
		t.Fatal(err)
	}
	initFile := filepath.Join(dir, "init.sh")
	if err := os.WriteFile(initFile, []byte(local.Replace(string(initScript))), 0o600); err != nil {
		t.Fatal(err)
	}
	run("init", "sh", initFile)
	// A second `up` runs init again: it changes nothing.
	token1, _ := os.ReadFile(filepath.Join(dir, "keys", "worker1.token"))
	run("init again", "sh", initFile)
	if again, _ := os.ReadFile(filepath.Join(dir, "keys", "worker1.token")); string(again) != string(token1) || len(token1) == 0 {
		t.Error("init made worker1's token again")
	}
	// Prometheus scrapes with the key init made (prometheus.yml).
	promKey, _ := os.ReadFile(filepath.Join(dir, "keys", "prometheus.key"))
	req, _ := http.NewRequest("GET", "http://"+httpOf["server1"]+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(promKey)))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("/metrics with init's Prometheus key: %v %v", err, resp)
	} else {
		resp.Body.Close()
	}

	for _, name := range []string{"worker1", "worker2"} {
		s := f.Services[name]
		args := []string{}
		for _, a := range s.Entrypoint {
			args = append(args, local.Replace(interpolate(a)))
		}
		// The command's data dir is the worker's volume.
		for _, a := range s.Command {
			args = append(args, strings.ReplaceAll(local.Replace(a), "/var/lib/ffrtmp-worker", filepath.Join(dir, name)))
		}
		start(name, nil, args...)
	}

	cfg, err := cli.LoadConfig(func(k string) string {
		if k == "XDG_CONFIG_HOME" {
			return filepath.Join(dir, "keys", "admin")
		}
		return ""
	})
	if err != nil || cfg.APIKey == "" {
		t.Fatalf("init saved no CLI config: %v", err)
	}
	client, err := cli.NewClient(cfg.Addr, cfg.APIKey)
	if err != nil {
		t.Fatal(err)
	}
	waitWorkers(t, client, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	j, err := client.SubmitJob(ctx, &fsm.JobSpec{Scenario: "240p30-h264", Input: fsm.Input{URL: "testsrc://?duration=1"}, Outputs: []fsm.Output{{URL: "file:///compose.mp4"}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := waitJobDone(t, client, j.ID); got.State != fsm.JobSucceeded {
		t.Fatalf("job %s: %s %+v", j.ID, got.State, got.Error)
	}
}
