package worker

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// NetGuard checks the addresses a job's network inputs and RTMP outputs
// connect to, just before ffmpeg starts, and pins ffmpeg to them. Its
// methods are safe for concurrent use; the zero value is ready.
//
// The servers check a URL's host against the operator's allowed hosts at
// submission, by name or literal IP only. A name can resolve to anything,
// ffmpeg resolves it again, and ffmpeg follows HTTP redirects anywhere. So
// the worker:
//
//  1. resolves the host once and refuses the job (fsm.CodeURLNotAllowed)
//     if any address it resolves to is refused by Check;
//  2. for http, rtmp and srt, hands ffmpeg the checked address instead of
//     the name, so a DNS answer that changes after the check (rebinding)
//     is never used: http sends the name in its Host header, rtmp in its
//     tcUrl, srt has no use for it;
//  3. for https and rtmps keeps the name, because ffmpeg 5.1 sends no TLS
//     server name (SNI) to a numeric host, which virtual-hosted TLS
//     servers need; instead it turns on certificate verification against
//     the name (-tls_verify 1, the system's trusted CAs). A rebinding
//     between the check and ffmpeg's own lookup then reaches only a
//     server that holds a trusted certificate for the allowed name; that
//     residual window is documented in docs/security.md;
//  4. gives http(s) inputs -max_redirects 0, and when ffmpeg fails on one
//     asks the checked address once, without following, whether it
//     answered with a redirect, to fail the job with a clear error.
type NetGuard struct {
	// Resolver looks host names up; net.DefaultResolver if nil.
	Resolver Resolver
	// AllowLoopback lets host names that resolve to loopback addresses
	// through (ffrtmp dev, whose default policy allows localhost). A
	// literal loopback IP in a URL is allowed without it: only an
	// operator's allowed-host entry for that IP lets such a URL in.
	AllowLoopback bool
	// Cluster returns the cluster's own endpoints (host:port): the
	// servers' node, API and gossip addresses, which no job may reach.
	// Nil means none are known.
	Cluster func() []string
}

// Resolver looks up the addresses of a host name; *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Dials says how ffmpeg reaches each network URL of a plan, by the URL.
type Dials map[string]Dial

// Dial is how ffmpeg reaches one network URL: the URL it opens and the
// options that go right before it.
type Dial struct {
	URL  string
	Opts []string
	// addr is the checked address and port the connection goes to.
	addr netip.AddrPort
	// host is the URL's host, as the server sees it in Host or SNI.
	host string
}

// resolveTimeout bounds the lookup of a URL's host.
const resolveTimeout = 10 * time.Second

// metadataAddrs are cloud instance-metadata services outside the
// link-local ranges.
var metadataAddrs = []netip.Addr{
	netip.MustParseAddr("fd00:ec2::254"),   // AWS over IPv6
	netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud
}

// nat64 is the well-known NAT64 prefix (RFC 6052).
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// defaultPorts are the ports of schemes whose URLs may omit them.
var defaultPorts = map[string]uint16{"http": 80, "https": 443, "rtmp": 1935, "rtmps": 443}

// Dials checks and pins every network URL of plan (its input and RTMP
// outputs). A refused address is an *fsm.Error with fsm.CodeURLNotAllowed;
// a host that does not resolve is one with fsm.CodeFFmpeg (retryable).
func (g *NetGuard) Dials(ctx context.Context, plan *fsm.Plan) (Dials, error) {
	d := Dials{}
	if plan == nil {
		return d, nil
	}
	add := func(raw string) error {
		if _, ok := d[raw]; ok {
			return nil
		}
		dial, err := g.dial(ctx, raw)
		if err != nil {
			return err
		}
		d[raw] = dial
		return nil
	}
	switch plan.Input.Kind {
	case fsm.KindHTTP, fsm.KindRTMP, fsm.KindSRT:
		if err := add(plan.Input.URL); err != nil {
			return nil, err
		}
	}
	for _, r := range plan.Outputs {
		if r.Kind == fsm.KindRTMP {
			if err := add(r.URL); err != nil {
				return nil, err
			}
		}
	}
	return d, nil
}

// dial resolves, checks and pins one URL.
func (g *NetGuard) dial(ctx context.Context, raw string) (Dial, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || strings.ContainsAny(u.Host, "\r\n") {
		return Dial{}, fsm.Errorf(fsm.CodeInvalidURL, "URL %q has no valid host", raw)
	}
	host := u.Hostname()
	var port uint16
	if p := u.Port(); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return Dial{}, fsm.Errorf(fsm.CodeInvalidURL, "URL %q has a bad port", raw)
		}
		port = uint16(n)
	} else if port = defaultPorts[u.Scheme]; port == 0 {
		return Dial{}, fsm.Errorf(fsm.CodeInvalidURL, "URL %q needs a port", raw)
	}
	addrs, literal, err := g.lookup(ctx, host)
	if err != nil {
		return Dial{}, err
	}
	cluster := g.clusterEndpoints(ctx)
	for _, a := range addrs {
		if err := g.check(netip.AddrPortFrom(a, port), literal, cluster); err != nil {
			return Dial{}, fsm.Errorf(fsm.CodeURLNotAllowed, "host %s resolves to %s: %v", host, a, err)
		}
	}
	d := Dial{URL: raw, addr: netip.AddrPortFrom(addrs[0], port), host: u.Host}
	pinnedHost := netip.AddrPortFrom(addrs[0], port).String()
	if u.Port() == "" {
		pinnedHost = hostOf(addrs[0])
	}
	pinned, err := replaceHost(raw, u.Host, pinnedHost)
	if err != nil {
		return Dial{}, err
	}
	switch u.Scheme {
	case "http":
		d.Opts = []string{"-max_redirects", "0"}
		if !literal {
			d.URL = pinned
			d.Opts = append(d.Opts, "-headers", "Host: "+u.Host+"\r\n")
		}
	case "https":
		d.Opts = []string{"-max_redirects", "0"}
		if !literal {
			d.Opts = append(d.Opts, "-tls_verify", "1")
		}
	case "rtmp":
		if !literal {
			d.URL = pinned
			d.Opts = []string{"-rtmp_tcurl", rtmpTCURL(u)}
		}
	case "rtmps":
		if !literal {
			d.Opts = []string{"-tls_verify", "1"}
		}
	case "srt":
		if !literal {
			d.URL = pinned
		}
	default:
		return Dial{}, fsm.Errorf(fsm.CodeInvalidURL, "URL scheme %q is not a network scheme", u.Scheme)
	}
	return d, nil
}

// replaceHost returns raw with its host, host, replaced by to. The rest
// of raw stays byte for byte as submitted: ffmpeg reads an RTMP or SRT
// URL's path and query without unescaping them.
func replaceHost(raw, host, to string) (string, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	auth := rest[:end]
	at := strings.LastIndex(auth, "@") + 1
	if !ok || !strings.EqualFold(auth[at:], host) {
		return "", fsm.Errorf(fsm.CodeInvalidURL, "URL %q has an unexpected form", raw)
	}
	return scheme + "://" + auth[:at] + to + rest[end:], nil
}

// hostOf returns a as a URL host: IPv6 in brackets.
func hostOf(a netip.Addr) string {
	if a.Is6() {
		return "[" + a.String() + "]"
	}
	return a.String()
}

// lookup returns the addresses of host and whether host is a literal IP.
func (g *NetGuard) lookup(ctx context.Context, host string) ([]netip.Addr, bool, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return nil, true, fsm.Errorf(fsm.CodeURLNotAllowed, "address %s has a zone", host)
		}
		return []netip.Addr{a.Unmap()}, true, nil
	}
	r := g.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	addrs, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil || len(addrs) == 0 {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return nil, false, fsm.Errorf(fsm.CodeFFmpeg, "host %s does not resolve", host)
		}
		return nil, false, fsm.Errorf(fsm.CodeFFmpeg, "look up host %s: %v", host, err)
	}
	for i, a := range addrs {
		addrs[i] = a.Unmap()
	}
	return addrs, false, nil
}

// Check reports why a job may not connect to ap, or nil if it may.
// literal says the URL named the address itself, rather than a name that
// resolved to it.
//
// Always refused: unspecified, multicast and broadcast addresses;
// link-local addresses (169.254.0.0/16, fe80::/10), which hold cloud
// instance metadata, and the other metadata addresses; and the cluster's
// own endpoints, by address, and by port on any address of this host or
// of a server host. Loopback is refused for names unless AllowLoopback.
func (g *NetGuard) Check(ctx context.Context, ap netip.AddrPort, literal bool) error {
	return g.check(ap, literal, g.clusterEndpoints(ctx))
}

func (g *NetGuard) check(ap netip.AddrPort, literal bool, cluster []netip.AddrPort) error {
	a := ap.Addr().Unmap()
	if nat64.Contains(a) {
		// A NAT64 gateway forwards to the IPv4 address inside.
		b := a.As16()
		a = netip.AddrFrom4([4]byte(b[12:]))
	}
	switch {
	case !a.IsValid():
		return errors.New("not an address")
	case a.IsUnspecified():
		return errors.New("the unspecified address reaches this host")
	case a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return errors.New("multicast and broadcast addresses are not allowed")
	case a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || slices.Contains(metadataAddrs, a):
		return errors.New("link-local and instance-metadata addresses are not allowed")
	}
	local := isLocal(a)
	for _, c := range cluster {
		if c.Port() != ap.Port() {
			continue
		}
		if c.Addr() == a || (local && isLocal(c.Addr())) {
			return errors.New("the cluster's own API, node and gossip ports are not allowed")
		}
	}
	if a.IsLoopback() && !literal && !g.AllowLoopback {
		return errors.New("a host name that resolves to loopback is not allowed")
	}
	return nil
}

// clusterEndpoints resolves the cluster's endpoints. An endpoint on an
// unspecified address (a wildcard listener) counts as on every address of
// this host; one whose name does not resolve is left out.
func (g *NetGuard) clusterEndpoints(ctx context.Context) []netip.AddrPort {
	if g.Cluster == nil {
		return nil
	}
	var out []netip.AddrPort
	for _, hp := range g.Cluster() {
		host, p, err := net.SplitHostPort(hp)
		if err != nil {
			continue
		}
		port, err := strconv.ParseUint(p, 10, 16)
		if err != nil {
			continue
		}
		addrs, _, err := g.lookup(ctx, host)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			out = append(out, netip.AddrPortFrom(a, uint16(port)))
		}
	}
	return out
}

// isLocal reports whether a is an address of this host: loopback,
// unspecified, or an address of one of its interfaces.
func isLocal(a netip.Addr) bool {
	if a.IsLoopback() || a.IsUnspecified() {
		return true
	}
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ia := range ifaddrs {
		if n, ok := ia.(*net.IPNet); ok {
			if b, ok := netip.AddrFromSlice(n.IP); ok && b.Unmap() == a {
				return true
			}
		}
	}
	return false
}

// rtmpTCURL returns the tcUrl ffmpeg would send for u: the scheme, host
// and port, and the application, which is the first path segment, or the
// first two when more than one segment follows (libavformat/rtmpproto.c).
func rtmpTCURL(u *url.URL) string {
	path := strings.TrimPrefix(u.Path, "/")
	app := ""
	if first, rest, ok := strings.Cut(path, "/"); ok {
		app = first
		if strings.HasPrefix(path, "ondemand/") {
			app = "ondemand"
		} else if second, _, ok := strings.Cut(rest, "/"); ok {
			colon := strings.Index(rest, ":")
			if colon < 0 || colon > len(second) {
				app = first + "/" + second
			}
		}
	}
	return u.Scheme + "://" + u.Host + "/" + app
}

// redirected asks the checked address of an http(s) input, once and
// without following, whether it answers with a redirect, and if so
// returns the error to fail the job with; otherwise nil. It is called
// after ffmpeg failed on the input, which -max_redirects 0 reports only
// as an I/O error.
func redirected(ctx context.Context, d Dial) error {
	u, err := url.Parse(d.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || !d.addr.IsValid() {
		return nil
	}
	// Ask the original URL (its name for Host and TLS), but connect to
	// the address that was checked.
	orig := *u
	orig.Host = d.host
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", orig.String(), nil)
	if err != nil {
		return nil
	}
	req.Header.Set("Range", "bytes=0-0")
	addr := d.addr.String()
	client := &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			},
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return fsm.Errorf(fsm.CodeURLNotAllowed,
			"input %s answered with a redirect (HTTP %d); workers do not follow redirects: submit the final URL", d.host, resp.StatusCode)
	}
	return nil
}
