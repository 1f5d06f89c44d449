package cluster

import (
	"bytes"
	"net/http"
	"strconv"
	"sync"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	json "github.com/go-json-experiment/json/v1"
)

// responseBufs holds buffers of encoded responses for reuse.
var responseBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledResponse bounds a buffer kept for reuse, so that one large
// answer (a page of a thousand jobs) is not held for the small ones.
const maxPooledResponse = 256 << 10

// WriteJSON answers v as JSON with status, indented by indent ("" for
// compact), HTML characters left unescaped, with a trailing newline and
// a Content-Length. The bytes are those of encoding/json's Encoder with
// SetIndent("", indent) and SetEscapeHTML(false), which the API and the
// node RPC used before; the Encoder encodes into a buffer of its own per
// response, and indents in a second pass into another, while WriteJSON
// encodes in one pass into a reused buffer (a tenth of the leader's
// allocations under a load of submits were those buffers growing). If v
// does not encode, WriteJSON writes nothing and returns the error; an
// error writing the answer (the client has gone) is not returned, as
// there is no one left to tell.
func WriteJSON(w http.ResponseWriter, status int, v any, indent string) error {
	buf := responseBufs.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= maxPooledResponse {
			buf.Reset()
			responseBufs.Put(buf)
		}
	}()
	buf.Reset()
	opts := []jsonv2.Options{json.DefaultOptionsV1(), jsontext.EscapeForHTML(false)}
	if indent != "" {
		opts = append(opts, jsontext.WithIndent(indent))
	}
	if err := jsonv2.MarshalWrite(buf, v, opts...); err != nil {
		return err
	}
	buf.WriteByte('\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	w.Write(buf.Bytes())
	return nil
}
