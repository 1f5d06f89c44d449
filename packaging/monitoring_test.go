package packaging

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ffrtmp/ffrtmp/cli"
	"github.com/ffrtmp/ffrtmp/cluster"
)

// promtool returns the path of promtool, or skips the test; with CI=true a
// missing promtool fails it (.ci/run installs Debian's prometheus).
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool not found: .ci/run installs it (Debian package prometheus)")
		}
		t.Skip("promtool not found (apt-get install prometheus)")
	}
	return p
}

// alertRules returns every rule expression of monitoring/alerts.yml by
// alert name.
func alertRules(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("monitoring", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			out[r.Alert] = r.Expr
		}
	}
	return out
}

// dashboardQueries returns the dashboard's PromQL expressions (panel
// targets, with the template variables replaced by a match-all value)
// and the metrics its template variables query.
func dashboardQueries(t *testing.T) (exprs []string, variableMetrics []string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("monitoring", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	vars := strings.NewReplacer("$job", ".*", "$tenant", ".*")
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, vars.Replace(tg.Expr))
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`^label_values\(([a-zA-Z_:][a-zA-Z0-9_:]*),\s*[a-z_]+\)$`).FindStringSubmatch(q.Query)
		if m == nil {
			t.Fatalf("template variable query %q: want label_values(metric, label)", q.Query)
		}
		variableMetrics = append(variableMetrics, m[1])
	}
	if len(exprs) == 0 {
		t.Fatal("the dashboard has no queries")
	}
	return exprs, variableMetrics
}

// metricNames returns the metric names a PromQL expression selects: what
// is left after strings, label matchers, ranges, grouping clauses,
// functions, keywords and numbers are taken out.
func metricNames(expr string) []string {
	for _, re := range []string{`"[^"]*"`, `\{[^}]*\}`, `\[[^\]]*\]`, `\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`} {
		expr = regexp.MustCompile(re).ReplaceAllString(expr, " ")
	}
	keywords := []string{"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "inf", "nan"}
	var out []string
	for _, loc := range regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`).FindAllStringIndex(expr, -1) {
		name := expr[loc[0]:loc[1]]
		if strings.HasPrefix(strings.TrimLeft(expr[loc[1]:], " "), "(") || slices.Contains(keywords, strings.ToLower(name)) {
			continue
		}
		if loc[0] > 0 && (expr[loc[0]-1] >= '0' && expr[loc[0]-1] <= '9' || expr[loc[0]-1] == '.') {
			continue // a number's exponent or unit
		}
		out = append(out, name)
	}
	return out
}

// TestAlertRulesPromtool runs promtool check rules on the alert rules, and
// on the dashboard's queries written as recording rules, so that both
// parse as PromQL.
func TestAlertRulesPromtool(t *testing.T) {
	tool := promtool(t)
	if out, err := exec.Command(tool, "check", "rules", filepath.Join("monitoring", "alerts.yml")).CombinedOutput(); err != nil {
		t.Errorf("promtool check rules alerts.yml: %v\n%s", err, out)
	}
	exprs, _ := dashboardQueries(t)
	rules := map[string]any{}
	var list []map[string]string
	for i, e := range exprs {
		list = append(list, map[string]string{"record": fmt.Sprintf("ffrtmp_dashboard:query_%d", i), "expr": e})
	}
	rules["groups"] = []map[string]any{{"name": "dashboard", "rules": list}}
	b, err := yaml.Marshal(rules)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "dashboard.yml")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(tool, "check", "rules", file).CombinedOutput(); err != nil {
		t.Errorf("the dashboard's queries do not parse: %v\n%s", err, out)
	}
	// The Compose cluster's Prometheus configuration.
	if out, err := exec.Command(tool, "check", "config", "--syntax-only", filepath.Join("compose", "prometheus.yml")).CombinedOutput(); err != nil {
		t.Errorf("promtool check config compose/prometheus.yml: %v\n%s", err, out)
	}
}

// TestMonitoringMetricsExist starts a real server (the code of `ffrtmp
// server`, with a bolt store and Raft over TCP), initializes it as an
// operator would, scrapes its /metrics, and checks that every metric an
// alert rule or a dashboard query names is one it exports.
func TestMonitoringMetricsExist(t *testing.T) {
	rules := alertRules(t)
	for _, want := range []string{"FfrtmpNoLeader", "FfrtmpQuorumAtRisk", "FfrtmpApplyLag", "FfrtmpStoreDown", "FfrtmpQueueStalled",
		"FfrtmpJobFailureRate", "FfrtmpWorkersDown", "FfrtmpWorkerLost", "FfrtmpQuotaRefusals", "FfrtmpDeprecatedCalls"} {
		if rules[want] == "" {
			t.Errorf("alerts.yml has no alert %s", want)
		}
	}
	used := map[string][]string{}
	for name, expr := range rules {
		for _, m := range metricNames(expr) {
			used[m] = append(used[m], "alert "+name)
		}
	}
	exprs, vars := dashboardQueries(t)
	for i, expr := range exprs {
		for _, m := range metricNames(expr) {
			used[m] = append(used[m], fmt.Sprintf("dashboard query %d", i))
		}
	}
	for _, m := range vars {
		used[m] = append(used[m], "dashboard variable")
	}
	// The extraction must find what the alerts are about.
	for _, m := range []string{"ffrtmp_raft_state", "ffrtmp_raft_applied_index", "ffrtmp_store_up", "ffrtmp_queue_oldest_seconds",
		"ffrtmp_jobs_failed_total", "ffrtmp_workers", "ffrtmp_quota_refusals_total", "ffrtmp_http_deprecated_requests_total",
		"ffrtmp_tenant_running_cpu", "ffrtmp_tenant_running_memory_bytes", "ffrtmp_tenant_used_cpu", "ffrtmp_tenant_used_memory_bytes"} {
		if used[m] == nil {
			t.Errorf("no rule or query uses %s", m)
		}
	}

	exported := scrapeLiveServer(t)
	for m, where := range used {
		if exported[m] {
			continue
		}
		t.Errorf("%s (used by %s) is not exported by a live server", m, strings.Join(slices.Compact(where), ", "))
	}
}

// scrapeLiveServer runs a one-node server, runs `ffrtmp cluster init`
// against it, and returns the metric names its /metrics exports.
func scrapeLiveServer(t *testing.T) map[string]bool {
	t.Helper()
	dir := t.TempDir()
	keyText := cluster.GenerateKey()
	keyFile := filepath.Join(dir, "cluster.key")
	if err := os.WriteFile(keyFile, []byte(keyText+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := cluster.ParseKey(keyText)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	raftAddr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- cli.RunServer(ctx, cli.ServerConfig{
			DataDir: filepath.Join(dir, "data"), RaftAddr: raftAddr, HTTPAddr: "127.0.0.1:0", BootstrapExpect: 1,
			ClusterKey: key, WorkerLease: cluster.DefaultWorkerLease, ReadyGrace: cli.DefaultReadyGrace,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Out: io.Discard,
			OnReady: func(url string) { ready <- url },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	var url string
	select {
	case url = <-ready:
	case err := <-done:
		t.Fatalf("server: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the server did not start serving within 30 s")
	}
	// `ffrtmp cluster init` waits for the leader as an operator's would:
	// retried until it succeeds, within a deadline.
	cfgHome := filepath.Join(dir, "config")
	env := cli.Env{Stdout: io.Discard, Stderr: io.Discard, Stdin: strings.NewReader(""), Getenv: func(k string) string {
		if k == "XDG_CONFIG_HOME" {
			return cfgHome
		}
		return ""
	}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := cli.Run(context.Background(), env, []string{"cluster", "init", "--addr", url, "--cluster-key-file", keyFile})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster init: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Prometheus's key, made as docs/operations.md says: the super-admin's,
	// narrowed to metrics.view.
	var keyOut strings.Builder
	env.Stdout = &keyOut
	if err := cli.Run(context.Background(), env, []string{"users", "create-key", "--user", "admin@localhost", "--scopes", "metrics.view", "--name", "prometheus"}); err != nil {
		t.Fatalf("users create-key --scopes metrics.view: %v", err)
	}
	if resp, err := http.Get(url + "/metrics"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/metrics without a key: %v %v, want 401", err, resp)
	}
	req, _ := http.NewRequest("GET", url+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(keyOut.String()))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics with a metrics.view key: %d", resp.StatusCode)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		names[regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*`).FindString(line)] = true
	}
	if !names["ffrtmp_raft_state"] {
		t.Fatalf("the scrape has no ffrtmp_raft_state:\n%s", body)
	}
	return names
}
