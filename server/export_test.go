package server

// RouteKeys returns "METHOD pattern" of every route, for the isolation
// matrix of the external tests.
func (s *Server) RouteKeys() []string {
	var out []string
	for _, rt := range s.routes() {
		out = append(out, rt.method+" "+rt.pattern)
	}
	return out
}

// WithKeyChecksum returns an API key's text before its checksum with the
// right checksum appended.
func WithKeyChecksum(body string) string { return body + tokenChecksum(body) }
