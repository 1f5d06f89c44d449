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
	// CodeQuotaExceeded refuses what would take a tenant past one of
	// its limits; the error's Details name the quota, limit and usage.
	CodeQuotaExceeded Code = "quota_exceeded"
	// CodeTenantDisabled refuses new work for a disabled tenant.
	CodeTenantDisabled Code = "tenant_disabled"
	// CodeTenantBusy refuses to delete a tenant that has active jobs.
	CodeTenantBusy Code = "tenant_has_active_jobs"
	// CodeTokenRefused refuses a worker's registration that its worker
	// token does not allow: revoked, bound to another worker, or for
	// another tenant.
	CodeTokenRefused Code = "token_refused"
	// CodeUnknownCommand refuses a log entry of a type this node does
	// not know and may not skip.
	CodeUnknownCommand Code = "unknown_command"
	// CodeInvitationUsed, CodeInvitationExpired and CodeInvitationRevoked
	// refuse an invitation token that can no longer be accepted.
	CodeInvitationUsed    Code = "invitation_used"
	CodeInvitationExpired Code = "invitation_expired"
	CodeInvitationRevoked Code = "invitation_revoked"
)

// Error is a domain error with a stable code. Apply returns it as the
// response of a refused command; validation returns it for bad input.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	// Details, for quota_exceeded, names the quota, its limit and the
	// tenant's usage.
	Details *QuotaDetails `json:"details,omitempty"`
}

// QuotaDetails say which quota refused a command and by how much.
type QuotaDetails struct {
	// Quota is the limit's name: max_jobs, max_concurrent_jobs,
	// max_workers or max_cpu.
	Quota string  `json:"quota"`
	Limit float64 `json:"limit"`
	// Usage is the tenant's usage of the quota when it was refused.
	Usage float64 `json:"usage"`
	// Requested is what the refused command asked for (max_cpu: the
	// job's resources.cpu), if not one.
	Requested float64 `json:"requested,omitempty"`
}

// quotaError is a quota_exceeded refusal with its details.
func quotaError(tenant, quota string, limit, usage, requested float64) *Error {
	e := Errorf(CodeQuotaExceeded, "tenant %s is at its %s limit (%g, using %g)", tenant, quota, limit, usage)
	e.Details = &QuotaDetails{Quota: quota, Limit: limit, Usage: usage, Requested: requested}
	return e
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
