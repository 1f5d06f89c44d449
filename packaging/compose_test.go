package packaging

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// composeFile is the part of the Compose specification that
// compose/compose.yaml uses; decoding it with known fields only catches a
// misspelt key.
type composeFile struct {
	Name     string                    `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
	Networks map[string]struct {
		IPAM struct {
			Config []struct {
				Subnet  string `yaml:"subnet"`
				IPRange string `yaml:"ip_range"`
			} `yaml:"config"`
		} `yaml:"ipam"`
	} `yaml:"networks"`
	Volumes map[string]*struct{} `yaml:"volumes"`
	// Extensions are the x- fields that hold YAML anchors.
	Extensions map[string]any `yaml:",inline"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
		Target     string `yaml:"target"`
	} `yaml:"build"`
	Restart         string            `yaml:"restart"`
	StopGracePeriod string            `yaml:"stop_grace_period"`
	DependsOn       yaml.Node         `yaml:"depends_on"`
	User            string            `yaml:"user"`
	Entrypoint      []string          `yaml:"entrypoint"`
	Command         []string          `yaml:"command"`
	Environment     map[string]string `yaml:"environment"`
	Profiles        []string          `yaml:"profiles"`
	Ports           []string          `yaml:"ports"`
	Volumes         []string          `yaml:"volumes"`
	Healthcheck     *struct {
		Test     []string `yaml:"test"`
		Interval string   `yaml:"interval"`
		Timeout  string   `yaml:"timeout"`
		Retries  int      `yaml:"retries"`
	} `yaml:"healthcheck"`
	Networks yaml.Node `yaml:"networks"`
}

// interpolate resolves Compose's ${VAR:-default} to the default and $$
// to $, as Compose does with VAR unset.
func interpolate(s string) string {
	s = regexp.MustCompile(`\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}`).ReplaceAllString(s, "$1")
	return strings.ReplaceAll(s, "$$", "$")
}

func loadCompose(t *testing.T) *composeFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("compose", "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f composeFile
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	for k := range f.Extensions {
		if !strings.HasPrefix(k, "x-") {
			t.Errorf("compose.yaml: unknown top-level key %q", k)
		}
	}
	return &f
}

// dependsOn returns the services a service depends on (list or map form).
func dependsOn(n yaml.Node) []string {
	var out []string
	switch n.Kind {
	case yaml.SequenceNode:
		for _, c := range n.Content {
			out = append(out, c.Value)
		}
	case yaml.MappingNode:
		for i := 0; i < len(n.Content); i += 2 {
			out = append(out, n.Content[i].Value)
		}
	}
	return out
}

// fixedAddr returns the service's ipv4_address on network ffrtmp, if any.
func fixedAddr(t *testing.T, s composeService) string {
	t.Helper()
	if s.Networks.Kind != yaml.MappingNode {
		return ""
	}
	var nets map[string]struct {
		IPv4 string `yaml:"ipv4_address"`
	}
	if err := s.Networks.Decode(&nets); err != nil {
		t.Fatal(err)
	}
	return nets["ffrtmp"].IPv4
}

// scriptCommands returns the ffrtmp command lines of a shell script,
// with shell variables replaced by a sample word and quotes removed.
func scriptCommands(script string) [][]string {
	var out [][]string
	for _, line := range strings.Split(script, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, m := range regexp.MustCompile(`(?:^|[\s;(])ffrtmp ([a-z][^;&|<>\n]*)`).FindAllStringSubmatch(line, -1) {
			args := regexp.MustCompile(`\$\{?[A-Za-z_][A-Za-z0-9_]*\}?`).ReplaceAllString(m[1], "sample")
			out = append(out, strings.Fields(strings.NewReplacer(`"`, "", `'`, "").Replace(args)))
		}
	}
	return out
}

// TestComposeFile checks compose/compose.yaml offline: every ffrtmp
// command line in it (services, and the init scripts) is one the binary's
// flag parser takes; three servers share PostgreSQL and bootstrap from
// each other's fixed addresses; two workers have tokens of their own;
// Prometheus scrapes every server and Grafana provisions the dashboard;
// every file and volume it mounts exists.
func TestComposeFile(t *testing.T) {
	f := loadCompose(t)
	var servers, workers []string
	raftAddrs := map[string]string{}
	workerWrapper := `exec ffrtmp "$@"`
	for name, s := range f.Services {
		env := map[string]string{}
		for k, v := range s.Environment {
			env[k] = interpolate(v)
		}
		for _, dep := range dependsOn(s.DependsOn) {
			if _, ok := f.Services[dep]; !ok {
				t.Errorf("%s depends on unknown service %s", name, dep)
			}
		}
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if strings.HasPrefix(src, ".") {
				if _, err := os.Stat(filepath.Join("compose", src)); err != nil {
					t.Errorf("%s mounts %s: %v", name, src, err)
				}
			} else if _, ok := f.Volumes[src]; !ok {
				t.Errorf("%s mounts undeclared volume %s", name, src)
			}
		}
		if !strings.HasPrefix(s.Image, "ffrtmp/") {
			continue
		}
		if s.Build == nil || s.Build.Dockerfile != "packaging/docker/Dockerfile" || filepath.Clean(filepath.Join("compose", s.Build.Context)) != ".." {
			t.Errorf("%s: want a build from packaging/docker/Dockerfile in the repository root", name)
		}
		entry := interpolate(strings.Join(s.Entrypoint, " "))
		switch {
		case len(s.Entrypoint) == 0 || entry == "ffrtmp":
			// The image's entrypoint is ffrtmp: the command is its
			// command line (none for the cli service).
		case strings.Contains(entry, workerWrapper):
			env["FFRTMP_CA_HASH"] = "sha256:sample"
		case s.Entrypoint[0] == "/bin/sh":
			script := strings.Join(s.Command, "\n")
			if len(s.Entrypoint) == 2 && strings.HasSuffix(s.Entrypoint[1], ".sh") {
				src := ""
				for _, v := range s.Volumes {
					if parts := strings.Split(v, ":"); len(parts) >= 2 && parts[1] == s.Entrypoint[1] {
						src = parts[0]
					}
				}
				b, err := os.ReadFile(filepath.Join("compose", src))
				if err != nil {
					t.Fatalf("%s: script %s: %v", name, s.Entrypoint[1], err)
				}
				script = string(b)
			}
			cmds := scriptCommands(interpolate(script))
			if len(cmds) == 0 {
				t.Errorf("%s: its script runs no ffrtmp command", name)
			}
			for _, args := range cmds {
				checkArgs(t, name+" script", args, env)
			}
			continue
		default:
			t.Errorf("%s: entrypoint %q: want the image's, or a script", name, s.Entrypoint)
			continue
		}
		if len(s.Command) == 0 {
			continue
		}
		checkArgs(t, name, s.Command, env)
		switch s.Command[0] {
		case "server":
			servers = append(servers, name)
			raft := flagValue(s.Command, "raft-addr")
			raftAddrs[name] = raft
			if host, _, _ := strings.Cut(raft, ":"); host != fixedAddr(t, s) {
				t.Errorf("%s: --raft-addr %s, want its fixed address %s", name, raft, fixedAddr(t, s))
			}
			if got := flagValue(s.Command, "bootstrap-expect"); got != "3" {
				t.Errorf("%s: --bootstrap-expect %q, want 3", name, got)
			}
			if !strings.HasPrefix(env["FFRTMP_STORE"], "postgres://") || !slices.Contains(dependsOn(s.DependsOn), "postgres") {
				t.Errorf("%s: want the PostgreSQL store (FFRTMP_STORE %q) and to depend on postgres", name, env["FFRTMP_STORE"])
			}
		case "worker":
			workers = append(workers, name)
		}
	}
	slices.Sort(servers)
	if len(servers) != 3 || len(workers) != 2 {
		t.Fatalf("servers %v, workers %v: want 3 and 2", servers, workers)
	}
	for _, name := range servers {
		var others []string
		for _, o := range servers {
			if o != name {
				others = append(others, raftAddrs[o])
			}
		}
		if got := flagValue(f.Services[name].Command, "join"); got != strings.Join(others, ",") {
			t.Errorf("%s: --join %q, want the other servers %q", name, got, strings.Join(others, ","))
		}
	}

	// Each worker's token is its own, made by init.sh.
	initScript, err := os.ReadFile(filepath.Join("compose", "init.sh"))
	if err != nil {
		t.Fatal(err)
	}
	tokens := map[string]bool{}
	for _, w := range workers {
		tf := flagValue(f.Services[w].Command, "token-file")
		if tokens[tf] {
			t.Errorf("%s shares token file %s", w, tf)
		}
		tokens[tf] = true
		if want := "/keys/" + w + ".token"; tf != want || !regexp.MustCompile(`for w in [^;]*\b`+w+`\b`).Match(initScript) {
			t.Errorf("%s: --token-file %s: want %s, made by init.sh", w, tf, want)
		}
	}

	// Fixed addresses lie in the subnet, outside the range Docker hands
	// out to the other containers.
	ipam := f.Networks["ffrtmp"].IPAM.Config
	if len(ipam) != 1 {
		t.Fatal("network ffrtmp: want one ipam config")
	}
	subnet, err1 := netip.ParsePrefix(ipam[0].Subnet)
	dynamic, err2 := netip.ParsePrefix(ipam[0].IPRange)
	if err1 != nil || err2 != nil {
		t.Fatalf("network ffrtmp: subnet %v, ip_range %v", err1, err2)
	}
	for name, s := range f.Services {
		if a := fixedAddr(t, s); a != "" {
			ip, err := netip.ParseAddr(a)
			if err != nil || !subnet.Contains(ip) || dynamic.Contains(ip) {
				t.Errorf("%s: fixed address %s must be in %s and outside %s", name, a, subnet, dynamic)
			}
		}
	}

	// Monitoring: Prometheus scrapes every server's API.
	for _, svc := range []string{"prometheus", "grafana"} {
		if _, ok := f.Services[svc]; !ok {
			t.Errorf("no %s service", svc)
		}
	}
	prom, err := os.ReadFile(filepath.Join("compose", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var pc struct {
		ScrapeConfigs []struct {
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(prom, &pc); err != nil {
		t.Fatal(err)
	}
	var targets []string
	for _, sc := range pc.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			targets = append(targets, st.Targets...)
		}
	}
	for _, name := range servers {
		host, _, _ := strings.Cut(raftAddrs[name], ":")
		_, port, _ := strings.Cut(flagValue(f.Services[name].Command, "http-addr"), ":")
		if !slices.Contains(targets, host+":"+port) {
			t.Errorf("prometheus.yml does not scrape %s (%s:%s)", name, host, port)
		}
	}
}
