package server

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"sync"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// swaggerUI is the API's documentation page (GET /v1/docs): Swagger UI
// from the pinned npm package swagger-ui-dist (`make swagger-ui`
// refreshes it), its licenses, and the page and initializer of ours.
//
//go:embed swaggerui/index.html swaggerui/init.js swaggerui/swagger-ui-bundle.js swaggerui/swagger-ui.css
//go:embed swaggerui/LICENSE swaggerui/NOTICE swaggerui/swagger-ui-bundle.js.LICENSE.txt swaggerui/VERSION
var swaggerUI embed.FS

// docsPolicy is the Content-Security-Policy of the documentation page and
// its files: scripts and styles from this node only (no inline script),
// requests ("Try it out") to this node only, no framing.
const docsPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// docsFile is one embedded file of the documentation page.
type docsFile struct {
	data  []byte
	ctype string
	etag  string
}

// docsFiles maps the names of the page's files to their contents.
var docsFiles = sync.OnceValue(func() map[string]docsFile {
	out := map[string]docsFile{}
	fs.WalkDir(swaggerUI, "swaggerui", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := swaggerUI.ReadFile(p)
		if err != nil {
			return err
		}
		ctype := mime.TypeByExtension(path.Ext(p))
		if ctype == "" || path.Ext(p) == ".txt" {
			ctype = "text/plain; charset=utf-8"
		}
		sum := sha256.Sum256(data)
		out[path.Base(p)] = docsFile{data: data, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	return out
})

// handleDocs serves the documentation page. It needs no API key: the page
// is static, and "Try it out" sends the key the user gives it.
func (s *Server) handleDocs(w http.ResponseWriter, r *http.Request) {
	serveDocsFile(w, r, docsFiles()["index.html"])
}

// handleDocsFile serves a script, style sheet or license of the page.
func (s *Server) handleDocsFile(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	f, ok := docsFiles()[name]
	if !ok || name == "index.html" {
		s.writeError(w, r, fsm.Errorf(fsm.CodeNotFound, "no documentation file %q", echo(name)))
		return
	}
	serveDocsFile(w, r, f)
}

// serveDocsFile writes f with the page's security headers; the client
// revalidates with its ETag, since the page changes with the binary.
func serveDocsFile(w http.ResponseWriter, r *http.Request, f docsFile) {
	h := w.Header()
	h.Set("Content-Type", f.ctype)
	h.Set("Content-Security-Policy", docsPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", f.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.data))
}
