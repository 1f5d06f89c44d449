package server

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// APIVersion is the version of the HTTP API, major.minor: every response
// carries it in the API-Version header, and the OpenAPI document's
// info.version is APIVersion.patch (a test checks). Within a major
// version changes are additive only; docs/api-versioning.md states the
// policy.
const APIVersion = "1.1"

// apiVersionHeader is the response header that carries APIVersion.
const apiVersionHeader = "API-Version"

// deprecation marks a route that still works but has a successor: it
// answers with Deprecation (RFC 9745), Sunset (RFC 8594) and a Link to its
// successor, is counted in ffrtmp_http_deprecated_requests_total, and is
// deprecated: true in the OpenAPI document (a test checks both agree).
type deprecation struct {
	// since is when the route was deprecated.
	since time.Time
	// sunset is when it may stop answering: at least six months after
	// since (docs/api-versioning.md).
	sunset time.Time
	// successor is the pattern of the route that replaces it; its
	// wildcards take the request's values.
	successor string
}

// legacyAlias is a deprecated route at pattern that serves exactly as
// successor does (same handler, permission and read consistency), for
// clients of an older API that have not moved yet.
func legacyAlias(pattern string, successor route, since, sunset time.Time) route {
	rt := successor
	rt.pattern = pattern
	rt.deprecated = &deprecation{since: since, sunset: sunset, successor: successor.pattern}
	return rt
}

// setHeaders writes the Deprecation, Sunset and Link headers of a request
// to the deprecated route.
func (d *deprecation) setHeaders(h http.Header, r *http.Request) {
	h.Set("Deprecation", "@"+strconv.FormatInt(d.since.Unix(), 10))
	h.Set("Sunset", d.sunset.UTC().Format(http.TimeFormat))
	h.Add("Link", "<"+fillPattern(d.successor, r)+`>; rel="successor-version"`)
}

// fillPattern returns a route pattern with each {name} wildcard replaced
// by the request's path value of that name, escaped.
func fillPattern(pattern string, r *http.Request) string {
	var b strings.Builder
	for {
		open := strings.IndexByte(pattern, '{')
		end := strings.IndexByte(pattern, '}')
		if open < 0 || end < open {
			b.WriteString(pattern)
			return b.String()
		}
		name := strings.TrimSuffix(pattern[open+1:end], "...")
		b.WriteString(pattern[:open])
		b.WriteString(url.PathEscape(r.PathValue(name)))
		pattern = pattern[end+1:]
	}
}
