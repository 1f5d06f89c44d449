package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

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
)

// errStoreUnavailable marks a failed store read: the store (PostgreSQL)
// is most likely unreachable for a moment, so the client should retry.
var errStoreUnavailable = errors.New("the state store is unavailable")

func storeError(err error) error { return fmt.Errorf("%w: %w", errStoreUnavailable, err) }

// statusOf maps an error code to its HTTP status.
func statusOf(c fsm.Code) int {
	switch c {
	case fsm.CodeInvalidArgument, fsm.CodeUnknownScenario, fsm.CodeInvalidURL, CodeMalformedJSON, CodeUnknownField:
		return http.StatusBadRequest
	case fsm.CodeURLNotAllowed, CodePermissionDenied:
		return http.StatusForbidden
	case CodeUnauthenticated:
		return http.StatusUnauthorized
	case fsm.CodeNotFound:
		return http.StatusNotFound
	case fsm.CodeAlreadyExists, fsm.CodeInvalidTransition, fsm.CodeStaleAttempt, fsm.CodeWorkerLost:
		return http.StatusConflict
	case CodeBodyTooLarge:
		return http.StatusRequestEntityTooLarge
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
	var e *fsm.Error
	switch {
	case errors.As(err, &e):
	case errors.Is(err, fsm.ErrNotFound):
		e = fsm.Errorf(fsm.CodeNotFound, "not found")
	case errors.Is(err, cluster.ErrNoLeader), errors.Is(err, cluster.ErrNotLeader):
		w.Header().Set("Retry-After", "2")
		e = fsm.Errorf(CodeUnavailable, "the cluster has no leader right now; retry")
	case errors.Is(err, cluster.ErrUnknownOutcome):
		w.Header().Set("Retry-After", "1")
		e = fsm.Errorf(CodeUnavailable, "the leader changed while the write was in flight; it may or may not have been applied; retry (with the same Idempotency-Key for a submit)")
	case errors.Is(err, errStoreUnavailable):
		s.log.Warn("store read failed", "method", r.Method, "path", r.URL.Path, "error", err)
		w.Header().Set("Retry-After", "2")
		e = fsm.Errorf(CodeUnavailable, "the state store is unavailable; retry")
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		w.Header().Set("Retry-After", "2")
		e = fsm.Errorf(CodeUnavailable, "the request timed out; retry")
	default:
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "error", err)
		e = fsm.Errorf(fsm.CodeInternal, "internal error")
	}
	writeJSON(w, statusOf(e.Code), errorBody{Error: e})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		slog.Debug("write response", "error", err)
	}
}

// maxBodyBytes bounds request bodies.
const maxBodyBytes = 1 << 20

// decodeBody decodes one JSON object from the request into v, refusing
// unknown fields, trailing data and oversize bodies. The Content-Type is
// not checked: the body must be JSON whatever it claims.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	body := http.MaxBytesReader(w, r.Body, maxBodyBytes)
	dec := json.NewDecoder(body)
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
		return fsm.Errorf(CodeBodyTooLarge, "request body is larger than %d bytes", maxBodyBytes)
	case errors.As(err, &syntax):
		return fsm.Errorf(CodeMalformedJSON, "malformed JSON at byte %d: %v", syntax.Offset, err)
	case errors.As(err, &typ):
		return fsm.Errorf(CodeMalformedJSON, "field %q must be %s", typ.Field, typ.Type)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no typed error for unknown fields.
		return fsm.Errorf(CodeUnknownField, "%s", strings.TrimPrefix(err.Error(), "json: "))
	case errors.Is(err, io.EOF):
		return fsm.Errorf(CodeMalformedJSON, "request body is empty")
	}
	return fsm.Errorf(CodeMalformedJSON, "malformed JSON: %v", fmt.Sprint(err))
}
