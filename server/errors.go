package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	json "github.com/go-json-experiment/json/v1"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// API error codes that are not domain codes from fsm.
const (
	CodeUnauthenticated  fsm.Code = "unauthenticated"
	CodePermissionDenied fsm.Code = "permission_denied"
	CodeMalformedJSON    fsm.Code = "malformed_json"
	CodeUnknownField     fsm.Code = "unknown_field"
	CodeBodyTooLarge     fsm.Code = "body_too_large"
	CodeUnavailable      fsm.Code = "unavailable"
	CodeInvalidSnapshot  fsm.Code = "invalid_snapshot"
	CodeMethodNotAllowed fsm.Code = "method_not_allowed"
)

// errStoreUnavailable marks a failed store read: the store (PostgreSQL)
// is most likely unreachable for a moment, so the client should retry.
var errStoreUnavailable = errors.New("the state store is unavailable")

func storeError(err error) error { return fmt.Errorf("%w: %w", errStoreUnavailable, err) }

// statusOf maps an error code to its HTTP status.
func statusOf(c fsm.Code) int {
	switch c {
	case fsm.CodeInvalidArgument, fsm.CodeUnknownScenario, fsm.CodeInvalidURL, fsm.CodeUnknownCommand, CodeMalformedJSON, CodeUnknownField, CodeInvalidSnapshot:
		return http.StatusBadRequest
	case fsm.CodeURLNotAllowed, CodePermissionDenied, fsm.CodeTenantDisabled, fsm.CodeTokenRefused:
		return http.StatusForbidden
	case fsm.CodeQuotaExceeded:
		return http.StatusTooManyRequests
	case CodeUnauthenticated:
		return http.StatusUnauthorized
	case fsm.CodeNotFound:
		return http.StatusNotFound
	case fsm.CodeAlreadyExists, fsm.CodeInvalidTransition, fsm.CodeStaleAttempt, fsm.CodeWorkerLost, fsm.CodeTenantBusy,
		fsm.CodeInvitationUsed, fsm.CodeInvitationRevoked:
		return http.StatusConflict
	case fsm.CodeInvitationExpired:
		return http.StatusGone
	case CodeBodyTooLarge:
		return http.StatusRequestEntityTooLarge
	case CodeMethodNotAllowed:
		return http.StatusMethodNotAllowed
	case CodeUnavailable:
		return http.StatusServiceUnavailable
	case CodeWrongClusterKey:
		return http.StatusForbidden
	case CodeWrongDirection, CodeOtherCluster:
		return http.StatusConflict
	case CodeUnreachable:
		return http.StatusBadGateway
	}
	return http.StatusInternalServerError
}

type errorBody struct {
	Error *fsm.Error `json:"error"`
}

// writeError writes err as {"error":{"code":…,"message":…}}. Errors that
// are not *fsm.Error are internal, except Raft unavailability (503 with
// Retry-After) and canceled requests; their details are logged, not sent.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	e, retryAfter := s.apiError(r, err)
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	if e.Code == CodeUnauthenticated {
		w.Header().Set("WWW-Authenticate", `Bearer realm="ffrtmp"`)
	}
	if sw, ok := w.(*statusWriter); ok {
		sw.code = e.Code // for auditUnapplied
	}
	s.metrics.countQuotaRefusal(r, e)
	writeJSON(w, statusOf(e.Code), errorBody{Error: e})
}

// apiError turns err into the error a client sees, with the Retry-After
// (seconds) to send, if any: see writeError.
func (s *Server) apiError(r *http.Request, err error) (*fsm.Error, string) {
	var e *fsm.Error
	retryAfter := ""
	switch {
	case errors.As(err, &e):
	case errors.Is(err, fsm.ErrNotFound):
		e = fsm.Errorf(fsm.CodeNotFound, "not found")
	case errors.Is(err, errNoReadIndex):
		retryAfter = "2"
		e = fsm.Errorf(CodeUnavailable, "no leader confirmed this read within %s (an election?); retry, or add stale=true to read this node's state as it is", readHold)
	case errors.Is(err, errNotCaughtUp):
		retryAfter = "1"
		e = fsm.Errorf(CodeUnavailable, "%s", err.Error())
	case errors.Is(err, cluster.ErrNoLeader), errors.Is(err, cluster.ErrNotLeader):
		retryAfter = "2"
		e = fsm.Errorf(CodeUnavailable, "the cluster has no leader right now; retry")
	case errors.Is(err, cluster.ErrUnknownOutcome):
		retryAfter = "1"
		e = fsm.Errorf(CodeUnavailable, "the leader changed while the write was in flight; it may or may not have been applied; retry (with the same Idempotency-Key for a submit)")
	case errors.Is(err, errStoreUnavailable):
		s.log.Warn("store read failed", "method", r.Method, "path", r.URL.Path, "error", err)
		retryAfter = "2"
		e = fsm.Errorf(CodeUnavailable, "the state store is unavailable; retry")
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		retryAfter = "2"
		e = fsm.Errorf(CodeUnavailable, "the request timed out; retry")
	default:
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "error", err)
		e = fsm.Errorf(fsm.CodeInternal, "internal error")
	}
	return &fsm.Error{Code: e.Code, Message: cleanMessage(shortenQuoted(e.Message)), Details: e.Details}, retryAfter
}

// shortenQuoted cuts every Go-quoted value in a message (how fsm and this
// package echo a caller's value, with %q) that is longer than
// maxEchoRunes, as echo does: one rule for every message, wherever it
// was written.
func shortenQuoted(m string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(m, '"')
		if i < 0 {
			b.WriteString(m)
			return b.String()
		}
		b.WriteString(m[:i])
		q, err := strconv.QuotedPrefix(m[i:])
		if err != nil {
			b.WriteByte('"')
			m = m[i+1:]
			continue
		}
		m = m[i+len(q):]
		if v, err := strconv.Unquote(q); err == nil && utf8.RuneCountInString(v) > maxEchoRunes {
			q = echo(v)
		}
		b.WriteString(q)
	}
}

// maxMessageRunes bounds an error message as sent, whatever it echoes.
const maxMessageRunes = 1024

// cleanMessage makes an error message safe to print: control characters
// (which an echoed value may carry) are escaped as \u codes and the
// message is cut to maxMessageRunes.
func cleanMessage(m string) string {
	var b strings.Builder
	n := 0
	for _, r := range strings.ToValidUTF8(m, "\uFFFD") {
		if n++; n > maxMessageRunes {
			b.WriteString("…")
			break
		}
		if unicode.IsControl(r) {
			fmt.Fprintf(&b, "\\u%04x", r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// maxEchoRunes bounds a caller's value echoed in an error message.
const maxEchoRunes = 64

// echo returns a caller-supplied value (an ID, a path, a query value) for
// an error message, quoted with Go escapes (so no control character is
// printed) and cut to maxEchoRunes runes with an ellipsis.
func echo(v string) string {
	if utf8.RuneCountInString(v) > maxEchoRunes {
		v = string([]rune(v)[:maxEchoRunes]) + "…"
	}
	return strconv.Quote(v)
}

// writeJSON answers v as indented JSON, for people reading API answers.
func writeJSON(w http.ResponseWriter, status int, v any) {
	encodeJSON(w, status, v, "  ")
}

// writeCompactJSON answers v as compact JSON: the worker protocol's
// answers, which only programs read (an assigned job, spec and plan
// included, is 1.8 times as large indented).
func writeCompactJSON(w http.ResponseWriter, status int, v any) {
	encodeJSON(w, status, v, "")
}

func encodeJSON(w http.ResponseWriter, status int, v any, indent string) {
	if err := cluster.WriteJSON(w, status, v, indent); err != nil {
		// A type of this package that does not encode: a bug, not the
		// caller's; nothing was written yet.
		slog.Error("encode response", "type", fmt.Sprintf("%T", v), "error", err)
		cluster.WriteJSON(w, http.StatusInternalServerError, errorBody{Error: fsm.Errorf(fsm.CodeInternal, "the answer could not be encoded")}, indent)
	}
}

// maxBodyBytes bounds request bodies.
const maxBodyBytes = 1 << 20

// decodeBody decodes one JSON object from the request into v, refusing
// unknown fields, trailing data and oversize bodies. The Content-Type is
// not checked: the body must be JSON whatever it claims.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	return decodeBodyLimit(w, r, v, maxBodyBytes)
}

// decodeBodyLimit is decodeBody with a body of up to limit bytes.
func decodeBodyLimit(w http.ResponseWriter, r *http.Request, v any, limit int64) error {
	return decodeStrict(http.MaxBytesReader(w, r.Body, limit), v)
}

// decodeStrict decodes exactly one JSON object from rd into v, refusing
// unknown fields and trailing data, with the API's typed errors.
func decodeStrict(rd io.Reader, v any) error {
	dec := json.NewDecoder(rd)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if dec.More() {
		return fsm.Errorf(CodeMalformedJSON, "request body must hold exactly one JSON object")
	}
	if _, err := dec.Token(); err == nil {
		return fsm.Errorf(CodeMalformedJSON, "request body must hold exactly one JSON object")
	} else if tooLarge(err) {
		return jsonError(err)
	}
	return nil
}

// DecodeJobSpec decodes a job spec exactly as POST /v1/jobs does: one JSON
// object, no unknown fields, no frame rate of 0. The CLI decodes its
// --spec files with it, so that it accepts what the API accepts.
func DecodeJobSpec(data []byte) (fsm.JobSpec, error) {
	var spec fsm.JobSpec
	if err := decodeStrict(bytes.NewReader(data), &spec); err != nil {
		return fsm.JobSpec{}, err
	}
	if err := refuseZeroFPS(data); err != nil {
		return fsm.JobSpec{}, err
	}
	return spec, nil
}

func tooLarge(err error) bool {
	var mb *http.MaxBytesError
	return errors.As(err, &mb)
}

func jsonError(err error) error {
	var (
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
	)
	switch {
	case tooLarge(err):
		var mb *http.MaxBytesError
		errors.As(err, &mb)
		return fsm.Errorf(CodeBodyTooLarge, "request body is larger than %d bytes", mb.Limit)
	case errors.As(err, &syntax):
		return fsm.Errorf(CodeMalformedJSON, "malformed JSON at byte %d: %s", syntax.Offset, strings.TrimPrefix(err.Error(), "json: "))
	case errors.As(err, &typ):
		if typ.Field == "" {
			return fsm.Errorf(CodeMalformedJSON, "the body must be %s, not a JSON %s", jsonKind(typ.Type), typ.Value)
		}
		return fsm.Errorf(CodeMalformedJSON, "field %s must be %s, not a JSON %s", echo(typ.Field), jsonKind(typ.Type), typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no typed error for unknown fields.
		return fsm.Errorf(CodeUnknownField, "%s", strings.TrimPrefix(err.Error(), "json: "))
	case errors.Is(err, io.EOF):
		return fsm.Errorf(CodeMalformedJSON, "request body is empty")
	}
	var fe *fsm.Error
	if errors.As(err, &fe) {
		return fe // from a type's own decoder, e.g. a video parameter
	}
	return fsm.Errorf(CodeMalformedJSON, "malformed JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
}

// jsonKind names the JSON kind a Go type decodes from, for error messages
// that must not show Go type names.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "a JSON value"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Implements(reflect.TypeFor[json.Unmarshaler]()) || reflect.PointerTo(t).Implements(reflect.TypeFor[json.Unmarshaler]()) {
		if t.Kind() != reflect.Struct {
			return "a string" // Duration and the like
		}
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "a JSON value"
}
