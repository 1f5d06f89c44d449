package fsm

import (
	"errors"
	"fmt"
)

// Code is a stable, machine-readable error code. Clients match on codes,
// never on messages. Codes are part of the API: never rename one.
type Code string

// Error codes returned by validation and by Apply.
const (
	CodeInvalidArgument   Code = "invalid_argument"
	CodeUnknownScenario   Code = "unknown_scenario"
	CodeInvalidURL        Code = "invalid_url"
	CodeURLNotAllowed     Code = "url_not_allowed"
	CodeNotFound          Code = "not_found"
	CodeAlreadyExists     Code = "already_exists"
	CodeInvalidTransition Code = "invalid_transition"
	CodeStaleAttempt      Code = "stale_attempt"
	CodeNoCapableWorker   Code = "no_capable_worker"
	CodeAcquireTimeout    Code = "acquire_timeout"
	CodeWorkerLost        Code = "worker_lost"
	CodeTimeout           Code = "timeout"
	CodeFFmpeg            Code = "ffmpeg_error"
	CodeResourceExceeded  Code = "resource_exceeded"
	CodeInternal          Code = "internal"
	// CodeTokenRefused refuses a worker's registration that its worker
	// token does not allow: revoked, bound to another worker, or for
	// another tenant.
	CodeTokenRefused Code = "token_refused"
	// CodeUnknownCommand refuses a log entry of a type this node does
	// not know and may not skip.
	CodeUnknownCommand Code = "unknown_command"
)

// Error is a domain error with a stable code. Apply returns it as the
// response of a refused command; validation returns it for bad input.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Errorf returns an *Error with the given code and formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of err if it is or wraps an *Error, else "".
func ErrorCode(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
