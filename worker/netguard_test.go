package worker

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// fakeResolver answers host names from a map; an answer list is used in
// turn, its last entry for every later lookup.
type fakeResolver struct {
	mu      sync.Mutex
	answers map[string][][]netip.Addr
	lookups map[string]int
}

func newResolver(answers map[string][]string) *fakeResolver {
	r := &fakeResolver{answers: map[string][][]netip.Addr{}, lookups: map[string]int{}}
	for host, addrs := range answers {
		var as []netip.Addr
		for _, a := range addrs {
			as = append(as, netip.MustParseAddr(a))
		}
		r.answers[host] = [][]netip.Addr{as}
	}
	return r
}

// then adds a later answer for host: DNS rebinding.
func (r *fakeResolver) then(host string, addrs ...string) {
	var as []netip.Addr
	for _, a := range addrs {
		as = append(as, netip.MustParseAddr(a))
	}
	r.answers[host] = append(r.answers[host], as)
}

func (r *fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	all, ok := r.answers[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	n := r.lookups[host]
	r.lookups[host]++
	return slices.Clone(all[min(n, len(all)-1)]), nil
}

// exampleHosts resolves the example hosts of the argv tests.
var exampleHosts = newResolver(map[string][]string{
	"cdn.example": {"203.0.113.10"}, "ingest.example": {"203.0.113.20"}, "live.example": {"203.0.113.30"},
})

// exampleDials checks plan's network URLs with exampleHosts; nil if a
// URL is refused, for the tests of what BuildArgs refuses itself.
func exampleDials(t *testing.T, plan *fsm.Plan) Dials {
	t.Helper()
	d, err := (&NetGuard{Resolver: exampleHosts}).Dials(t.Context(), plan)
	if err != nil {
		return nil
	}
	return d
}

func TestNetGuardCheck(t *testing.T) {
	t.Parallel()
	cluster := func() []string { return []string{"127.0.0.1:7070", "10.0.0.5:7071", "0.0.0.0:7072"} }
	tests := []struct {
		addr     string
		literal  bool
		loopback bool // AllowLoopback
		ok       bool
	}{
		{"203.0.113.7:80", false, false, true},
		{"10.1.2.3:1935", false, false, true},
		{"[2001:db8::1]:443", false, false, true},
		{"169.254.169.254:80", true, true, false},
		{"169.254.1.1:80", false, false, false},
		{"[fe80::1]:80", true, true, false},
		{"[fd00:ec2::254]:80", true, true, false},
		{"[::ffff:169.254.169.254]:80", true, true, false},
		{"[64:ff9b::a9fe:a9fe]:80", true, true, false},
		{"[64:ff9b::cb00:7107]:80", false, false, true},
		{"0.0.0.0:8080", true, true, false},
		{"[::]:8080", true, true, false},
		{"224.0.0.1:5000", true, true, false},
		{"255.255.255.255:80", true, true, false},
		// Loopback: a literal address is the operator's choice; a name
		// resolving to it only in dev mode.
		{"127.0.0.1:8080", true, false, true},
		{"127.0.0.1:8080", false, false, false},
		{"127.0.0.1:8080", false, true, true},
		{"[::1]:8080", false, false, false},
		// The cluster's own ports, whichever way they are reached.
		{"127.0.0.1:7070", true, true, false},
		{"127.0.0.2:7070", true, true, false},
		{"10.0.0.5:7071", false, false, false},
		{"10.0.0.6:7071", false, false, true},
		{"127.0.0.1:7072", true, true, false},
		{"10.0.0.5:7070", false, false, true},
	}
	for _, tt := range tests {
		g := &NetGuard{AllowLoopback: tt.loopback, Cluster: cluster}
		err := g.Check(t.Context(), netip.MustParseAddrPort(tt.addr), tt.literal)
		if (err == nil) != tt.ok {
			t.Errorf("Check(%s, literal %v, loopback %v) = %v, want allowed %v", tt.addr, tt.literal, tt.loopback, err, tt.ok)
		}
	}
}

func TestNetGuardDials(t *testing.T) {
	t.Parallel()
	res := newResolver(map[string][]string{
		"media.test": {"198.51.100.7"}, "v6.test": {"2001:db8::7"}, "mixed.test": {"198.51.100.8", "169.254.169.254"},
		"local.test": {"127.0.0.1"}, "api.test": {"10.0.0.5"},
	})
	g := &NetGuard{Resolver: res, Cluster: func() []string { return []string{"api.test:7070"} }}
	tests := []struct {
		url      string
		wantURL  string
		wantOpts []string
		code     fsm.Code
	}{
		{"http://media.test/a.mp4?x=1", "http://198.51.100.7/a.mp4?x=1", []string{"-max_redirects", "0", "-headers", "Host: media.test\r\n"}, ""},
		{"http://user:pw@media.test:8080/a%20b.mp4", "http://user:pw@198.51.100.7:8080/a%20b.mp4", []string{"-max_redirects", "0", "-headers", "Host: media.test:8080\r\n"}, ""},
		{"http://v6.test:81/a.mp4", "http://[2001:db8::7]:81/a.mp4", []string{"-max_redirects", "0", "-headers", "Host: v6.test:81\r\n"}, ""},
		{"http://198.51.100.9/a.mp4", "http://198.51.100.9/a.mp4", []string{"-max_redirects", "0"}, ""},
		{"https://media.test/a.mp4", "https://media.test/a.mp4", []string{"-max_redirects", "0", "-tls_verify", "1"}, ""},
		{"rtmp://media.test/live/key", "rtmp://198.51.100.7/live/key", []string{"-rtmp_tcurl", "rtmp://media.test/live"}, ""},
		{"rtmp://media.test:1936/app/inst/key", "rtmp://198.51.100.7:1936/app/inst/key", []string{"-rtmp_tcurl", "rtmp://media.test:1936/app/inst"}, ""},
		{"rtmp://media.test/app/mp4:dir/file", "rtmp://198.51.100.7/app/mp4:dir/file", []string{"-rtmp_tcurl", "rtmp://media.test/app"}, ""},
		{"rtmps://media.test/live/key", "rtmps://media.test/live/key", []string{"-tls_verify", "1"}, ""},
		{"srt://media.test:9000?streamid=a", "srt://198.51.100.7:9000?streamid=a", nil, ""},
		{"http://mixed.test/a.mp4", "", nil, fsm.CodeURLNotAllowed},
		{"http://local.test/a.mp4", "", nil, fsm.CodeURLNotAllowed},
		{"http://169.254.169.254/latest/meta-data/iam", "", nil, fsm.CodeURLNotAllowed},
		{"http://10.0.0.5:7070/v1/jobs", "", nil, fsm.CodeURLNotAllowed},
		{"http://api.test:7070/v1/jobs", "", nil, fsm.CodeURLNotAllowed},
		{"http://gone.test/a.mp4", "", nil, fsm.CodeFFmpeg},
		{"srt://media.test", "", nil, fsm.CodeInvalidURL},
	}
	for _, tt := range tests {
		d, err := g.dial(t.Context(), tt.url)
		if got := fsm.ErrorCode(err); got != tt.code {
			t.Errorf("dial(%s) error %v, want code %q", tt.url, err, tt.code)
			continue
		}
		if err == nil && (d.URL != tt.wantURL || !slices.Equal(d.Opts, tt.wantOpts)) {
			t.Errorf("dial(%s) = %q %q, want %q %q", tt.url, d.URL, d.Opts, tt.wantURL, tt.wantOpts)
		}
	}
}

func TestBuildArgsNeedsCheckedAddress(t *testing.T) {
	t.Parallel()
	plan := &fsm.Plan{Input: fsm.PlanInput{Kind: fsm.KindHTTP, URL: "http://cdn.example/a.mp4"},
		Outputs: []fsm.Rendition{rendition(fsm.KindFile, "file:///a.mp4", "a.mp4", "mp4", "h264", 64, 64, 10, 100, "aac")}}
	if _, err := BuildArgs(plan, softwareEncoders, "", []string{"/m/a.mp4"}, 0, nil); fsm.ErrorCode(err) != fsm.CodeInternal {
		t.Fatalf("BuildArgs without dials = %v, want code internal", err)
	}
}

// mediaServer serves one media file at /a.mp4 on addr (host:0) and
// counts the requests it gets and their Host headers.
type mediaServer struct {
	url      string
	port     string
	requests atomic.Int32
	mu       sync.Mutex
	hosts    []string
}

func serveHTTP(t *testing.T, addr string, h func(w http.ResponseWriter, r *http.Request)) *mediaServer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	m := &mediaServer{url: "http://" + ln.Addr().String()}
	_, m.port, _ = net.SplitHostPort(ln.Addr().String())
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.requests.Add(1)
		m.mu.Lock()
		m.hosts = append(m.hosts, r.Host)
		m.mu.Unlock()
		h(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return m
}

// serveMedia serves a generated two-second clip at /a.mp4.
func serveMedia(t *testing.T, addr string) *mediaServer {
	t.Helper()
	file := filepath.Join(t.TempDir(), "a.mp4")
	makeMedia(t, file, "160x120", "2", "libx264")
	return serveHTTP(t, addr, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/a.mp4" {
			http.NotFound(w, r)
			return
		}
		http.ServeFile(w, r, file)
	})
}

// httpPlan compiles a job from in to file:///out/a.mp4 under a policy
// that allows hosts.
func httpPlan(t *testing.T, in string, hosts ...string) *fsm.Plan {
	t.Helper()
	spec := fsm.JobSpec{Input: fsm.Input{URL: in}, Outputs: []fsm.Output{{URL: "file:///out/a.mp4"}},
		Video: &fsm.VideoParams{Codec: "h264", Width: 160, Height: 120, FPS: 10}}
	plan, err := spec.Compile(fsm.Policy{AllowedHosts: hosts})
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return plan
}

// TestRunRefusesRedirect serves a redirect on an allowed loopback host to
// another loopback address and port nobody allowed: the run fails with
// url_not_allowed and the redirect's target gets no request.
func TestRunRefusesRedirect(t *testing.T) {
	t.Parallel()
	e := setup(t)
	target := serveHTTP(t, "127.0.0.2:0", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("secret")) })
	allowed := serveHTTP(t, "127.0.0.1:0", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.url+"/latest/meta-data/iam", http.StatusFound)
	})
	u, _ := url.Parse(allowed.url)
	r, err := Start(t.Context(), e.params(httpPlan(t, allowed.url+"/a.mp4", u.Host)))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	_, tail, err := wait(t, r)
	if fsm.ErrorCode(err) != fsm.CodeURLNotAllowed {
		t.Fatalf("run error %v, want code url_not_allowed\n%s", err, tail)
	}
	if n := target.requests.Load(); n != 0 {
		t.Fatalf("the redirect's target got %d requests", n)
	}
	if allowed.requests.Load() == 0 {
		t.Fatal("the allowed host got no request")
	}
	if parts := partFiles(t, e.root); len(parts) != 0 {
		t.Errorf("temporary files left: %v", parts)
	}
}

// TestRunPinsResolvedAddress resolves an allowed name to the media server
// for the check and to another server afterwards (DNS rebinding): ffmpeg
// reads from the checked address with the name in its Host header, the
// run transcodes, and the other server gets no request.
func TestRunPinsResolvedAddress(t *testing.T) {
	t.Parallel()
	e := setup(t)
	media := serveMedia(t, "127.0.0.1:0")
	evil := serveHTTP(t, "127.0.0.3:"+media.port, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("secret")) })
	res := newResolver(map[string][]string{"media.test": {"127.0.0.1"}})
	res.then("media.test", "127.0.0.3")
	p := e.params(httpPlan(t, "http://media.test:"+media.port+"/a.mp4", "media.test"))
	p.Net = &NetGuard{Resolver: res, AllowLoopback: true}
	out := mustRun(t, p)
	checkOutput(t, e, out.Outputs[0], "file:///out/a.mp4", "out/a.mp4", "h264", 160, 120, 10, 2)
	if n := evil.requests.Load(); n != 0 {
		t.Fatalf("the rebound address got %d requests", n)
	}
	media.mu.Lock()
	defer media.mu.Unlock()
	if len(media.hosts) == 0 || media.hosts[0] != "media.test:"+media.port {
		t.Fatalf("media server saw Host %q, want media.test:%s", media.hosts, media.port)
	}
	// Later lookups would have answered the rebound address; ffmpeg
	// never asked.
	if again, _ := res.LookupNetIP(t.Context(), "ip", "media.test"); again[0].String() != "127.0.0.3" {
		t.Fatalf("resolver answered %v after the check, want the rebound address", again)
	}
}

// TestRunAllowedHTTPInput transcodes from an allowed literal loopback
// host.
func TestRunAllowedHTTPInput(t *testing.T) {
	t.Parallel()
	e := setup(t)
	media := serveMedia(t, "127.0.0.1:0")
	u, _ := url.Parse(media.url)
	out := mustRun(t, e.params(httpPlan(t, media.url+"/a.mp4", u.Hostname())))
	checkOutput(t, e, out.Outputs[0], "file:///out/a.mp4", "out/a.mp4", "h264", 160, 120, 10, 2)
}

// TestRunRefusesOwnAPIAndLinkLocal refuses, before ffmpeg starts, inputs
// on link-local addresses and on the cluster's own API port, even when
// the operator allowed their hosts.
func TestRunRefusesOwnAPIAndLinkLocal(t *testing.T) {
	t.Parallel()
	e := setup(t)
	api := serveHTTP(t, "127.0.0.1:0", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("{}")) })
	apiAddr := "127.0.0.1:" + api.port
	res := newResolver(map[string][]string{"localhost": {"127.0.0.1", "::1"}, "meta.test": {"169.254.169.254"}})
	guard := &NetGuard{Resolver: res, AllowLoopback: true, Cluster: func() []string { return []string{apiAddr} }}
	for _, in := range []string{
		"http://" + apiAddr + "/v1/jobs",
		"http://localhost:" + api.port + "/v1/jobs",
		"http://127.0.0.9:" + api.port + "/v1/jobs",
		"http://169.254.169.254/latest/meta-data/iam",
		"http://meta.test/latest/meta-data/iam",
	} {
		u, _ := url.Parse(in)
		p := e.params(httpPlan(t, in, u.Hostname()))
		p.Net = guard
		r, err := Start(t.Context(), p)
		if err == nil {
			wait(t, r)
		}
		if fsm.ErrorCode(err) != fsm.CodeURLNotAllowed {
			t.Errorf("Start(%s) = %v, want code url_not_allowed", in, err)
		}
	}
	if n := api.requests.Load(); n != 0 {
		t.Fatalf("the API got %d requests", n)
	}
	if _, err := os.Stat(filepath.Join(e.tenant, "out")); err == nil {
		entries, _ := os.ReadDir(filepath.Join(e.tenant, "out"))
		if len(entries) != 0 {
			t.Fatalf("refused runs left files: %v", entries)
		}
	}
}

func TestRTMPTCURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"rtmp://h/live/key":                          "rtmp://h/live",
		"rtmp://h:1936/live/key":                     "rtmp://h:1936/live",
		"rtmp://h/app/inst/key":                      "rtmp://h/app/inst",
		"rtmp://h/app/mp4:a/b":                       "rtmp://h/app",
		"rtmp://h/key":                               "rtmp://h/",
		"rtmp://h/ondemand/a/b":                      "rtmp://h/ondemand",
		"rtmp://h/live/key?token=" + strconv.Itoa(1): "rtmp://h/live",
	} {
		u, _ := url.Parse(in)
		if got := rtmpTCURL(u); got != want {
			t.Errorf("rtmpTCURL(%s) = %q, want %q", in, got, want)
		}
	}
}

// TestRunHTTPSNameNeedsTrustedCertificate reads an https input by name
// from a server whose certificate nobody trusts, as a rebound address
// would be: ffmpeg verifies the certificate against the name, so the
// handshake fails and the server gets no request.
func TestRunHTTPSNameNeedsTrustedCertificate(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var requests atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.Write([]byte("secret"))
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	// ffmpeg resolves the name again itself: use one the system knows.
	p := e.params(httpPlan(t, "https://localhost:"+u.Port()+"/a.mp4", "localhost"))
	p.Net = &NetGuard{Resolver: newResolver(map[string][]string{"localhost": {u.Hostname()}}), AllowLoopback: true}
	r, err := Start(t.Context(), p)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if _, tail, err := wait(t, r); fsm.ErrorCode(err) != fsm.CodeFFmpeg || !strings.Contains(tail, "verification") {
		t.Fatalf("run error %v, want ffmpeg_error from certificate verification\n%s", err, tail)
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("the untrusted server got %d requests", n)
	}
}
