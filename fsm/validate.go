package fsm

import (
	"cmp"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	json "github.com/go-json-experiment/json/v1"
)

// Validation before the log. The leader runs DecodeCommand on every entry
// before it proposes it (from its own API, a forwarding follower, a worker
// or the leader loop), so that whatever enters the Raft log decodes, Apply
// applies it without panicking, and every store can write what it
// produces. A refused entry never reaches the log: one bad request cannot
// stop the cluster.

// Bounds checked by validation of log entries.
const (
	// MaxIDLen bounds every object ID a command names, in bytes.
	MaxIDLen = 256
	// MaxTextLen bounds free-text fields other than logs (messages,
	// reasons, labels, encoder names), in bytes.
	MaxTextLen = 4096
	// MaxLogLen bounds a job's stored log (ffmpeg's stderr tail), in bytes.
	MaxLogLen = 1 << 20
	// maxAttempt keeps attempt and retry counters inside the stores'
	// 32-bit integer columns.
	maxAttempt = math.MaxInt32
)

// Validator is a command that checks itself. Every command type
// implements it.
type Validator interface {
	Command
	// Validate returns a *Error (CodeInvalidArgument) if the command
	// lacks something Apply relies on or holds text a store cannot keep.
	Validate() error
}

// DecodeCommand decodes a log entry (a type byte and a JSON body) and
// validates it completely. A type this node does not know but that has
// IgnoreUnknownTypeFlag set decodes to (nil, nil): nodes skip it. Refusals
// are *Error: CodeUnknownCommand for any other unknown type, else
// CodeInvalidArgument (empty entry, invalid UTF-8, a body that does not
// decode, or a command that fails its Validate). An envelope
// (EnvelopeType) decodes to its inner command; DecodeEntry also returns
// its actor.
func DecodeCommand(data []byte) (Command, error) {
	c, _, err := DecodeEntry(data)
	return c, err
}

// DecodeEntry is DecodeCommand that also returns the entry's actor: nil
// for a plain entry, validated for an envelope. A RecordAudit without an
// actor is refused.
func DecodeEntry(data []byte) (Command, *Actor, error) {
	if len(data) == 0 {
		return nil, nil, Errorf(CodeInvalidArgument, "empty command")
	}
	if !utf8.Valid(data[1:]) {
		return nil, nil, Errorf(CodeInvalidArgument, "command type %d: body is not valid UTF-8", data[0])
	}
	t, body, actor, err := unwrap(data)
	if err != nil {
		return nil, nil, Errorf(CodeInvalidArgument, "command envelope does not decode: %v", err)
	}
	if actor != nil {
		if err := actor.Validate(); err != nil {
			return nil, nil, err
		}
	}
	ct, ok := commandTypes[t]
	if !ok {
		if t&IgnoreUnknownTypeFlag != 0 {
			return nil, nil, nil
		}
		return nil, nil, Errorf(CodeUnknownCommand, "unknown command type %d", t)
	}
	c := ct.new()
	if err := json.Unmarshal(body, c); err != nil {
		return nil, nil, Errorf(CodeInvalidArgument, "command type %d: body does not decode", t)
	}
	if err := c.(Validator).Validate(); err != nil {
		return nil, nil, err
	}
	if _, ok := c.(*RecordAudit); ok && actor == nil {
		return nil, nil, invalid("an audit record needs an actor")
	}
	if _, ok := c.(*SubmitJobs); ok && actor != nil {
		return nil, nil, invalid("a batch of submits carries an actor per item, not an envelope")
	}
	return c, actor, nil
}

// invalid is a CodeInvalidArgument refusal.
func invalid(format string, args ...any) *Error {
	return Errorf(CodeInvalidArgument, format, args...)
}

// validText checks one free-text value: valid UTF-8, at most max bytes,
// and no control characters (C0, DEL, C1: so no NUL and no ANSI escape)
// other than those in allow. field names the value in the refusal.
func validText(field, s string, max int, allow string) error {
	if len(s) > max {
		return invalid("%s is longer than %d bytes", field, max)
	}
	if !utf8.ValidString(s) {
		return invalid("%s is not valid UTF-8", field)
	}
	if i := strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) && !strings.ContainsRune(allow, r) }); i >= 0 {
		r, _ := utf8.DecodeRuneInString(s[i:])
		return invalid("%s contains the control character %U", field, r)
	}
	return nil
}

// checkID checks a required object ID.
func checkID(field, id string) error {
	if id == "" {
		return invalid("%s is required", field)
	}
	return validText(field, id, MaxIDLen, "")
}

// checkReport checks a report's fencing token.
func checkReport(r Report) error {
	if err := checkID("job_id", r.JobID); err != nil {
		return err
	}
	if err := checkID("worker_id", r.WorkerID); err != nil {
		return err
	}
	if r.Attempt < 1 || r.Attempt > maxAttempt {
		return invalid("attempt must be between 1 and %d", maxAttempt)
	}
	return nil
}

// checkStrings walks v and checks every string in it (struct fields, slice
// elements, map keys and values) with validText. The field's JSON name
// picks the rule: "log" may hold newlines and tabs and be up to MaxLogLen
// long; "url" is checked again after percent-decoding; anything else is
// single-line text up to MaxTextLen. Names and IDs have tighter bounds,
// checked by the commands' Validate methods.
func checkStrings(field string, v reflect.Value) error {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return checkStrings(field, v.Elem())
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			return nil
		}
		for i := range v.NumField() {
			sf := v.Type().Field(i)
			if !sf.IsExported() {
				continue
			}
			name := field
			if !sf.Anonymous {
				tag, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
				name = joinField(field, cmp.Or(tag, sf.Name))
			}
			if err := checkStrings(name, v.Field(i)); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return nil // bytes (a key hash) are encoded as base64
		}
		for i := range v.Len() {
			if err := checkStrings(field+"["+strconv.Itoa(i)+"]", v.Index(i)); err != nil {
				return err
			}
		}
	case reflect.Map:
		iter := v.MapRange()
		for iter.Next() {
			if err := checkStrings(field+" key", iter.Key()); err != nil {
				return err
			}
			if err := checkStrings(field+"["+iter.Key().String()+"]", iter.Value()); err != nil {
				return err
			}
		}
	case reflect.String:
		return checkString(field, v.String())
	}
	return nil
}

// stringRule is checkString's rule, picked by the JSON name of the
// string's field (ruleFor).
type stringRule uint8

const (
	ruleText stringRule = iota
	ruleLog
	ruleURL
)

// limits returns the rule's length bound in bytes and the control
// characters it allows.
func (r stringRule) limits() (max int, allow string) {
	switch r {
	case ruleLog:
		return MaxLogLen, "\n\t"
	case ruleURL:
		return MaxURLLen, ""
	}
	return MaxTextLen, ""
}

func ruleFor(name string) stringRule {
	switch name {
	case "log":
		return ruleLog
	case "url":
		return ruleURL
	}
	return ruleText
}

// checkString applies checkStrings' rule for one field.
func checkString(field, s string) error {
	rule := ruleFor(field[strings.LastIndexByte(field, '.')+1:])
	max, allow := rule.limits()
	if err := validText(field, s, max, allow); err != nil {
		return err
	}
	if rule == ruleURL && strings.IndexFunc(percentDecode(s), unicode.IsControl) >= 0 {
		return invalid("%s holds a percent-encoded control character", field)
	}
	return nil
}

// percentDecode decodes every well-formed %XX of s and leaves anything
// else as it is, so that a malformed escape cannot hide a good one.
func percentDecode(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b = append(b, byte(v))
				i += 2
				continue
			}
		}
		b = append(b, s[i])
	}
	return string(b)
}

func joinField(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

// checkAll checks every string of c, then the command's own rules.
func checkAll(c Command, rules ...error) error {
	if v := reflect.ValueOf(c); !stringsOK(v, ruleText) {
		if err := checkStrings("", v); err != nil {
			return err
		}
	}
	for _, err := range rules {
		if err != nil {
			return err
		}
	}
	return nil
}

// TenantNamePattern is what a tenant's name (its ID) looks like: a
// lower-case slug of at most 63 characters, as the importer's --tenant.
const TenantNamePattern = `^[a-z0-9][a-z0-9_-]{0,62}$`

var tenantNameRE = regexp.MustCompile(TenantNamePattern)

// CheckTenantName returns a *Error (invalid_argument) if name is not a
// valid tenant name (TenantNamePattern).
func CheckTenantName(name string) error {
	if !tenantNameRE.MatchString(name) {
		return invalid("tenant name %q: use 1 to 63 lower-case letters, digits, '-' and '_', starting with a letter or digit", name)
	}
	return nil
}

// maxLimitCPU bounds a tenant's max_cpu.
const maxLimitCPU = 1 << 20

// checkLimit checks one limit value: not negative, and within a store's
// 32-bit integer column.
func checkLimit(field string, v int) error {
	if v < 0 || v > math.MaxInt32 {
		return invalid("%s must be between 0 (unlimited) and %d", field, math.MaxInt32)
	}
	return nil
}

// checkRetention checks a retention: 0 (forever) or at least a minute.
func checkRetention(field string, d Duration) error {
	if d < 0 || (d > 0 && time.Duration(d) < time.Minute) {
		return invalid("%s must be 0 (keep forever) or at least 1m", field)
	}
	return nil
}

func checkCPULimit(field string, v float64) error {
	if math.IsNaN(v) || v < 0 || v > maxLimitCPU {
		return invalid("%s must be between 0 (unlimited) and %d", field, maxLimitCPU)
	}
	return nil
}

func (l *Limits) validate() error {
	return cmp.Or(checkLimit("limits.max_jobs", l.MaxJobs), checkLimit("limits.max_concurrent_jobs", l.MaxConcurrentJobs),
		checkLimit("limits.max_workers", l.MaxWorkers), checkCPULimit("limits.max_cpu", l.MaxCPU))
}

// Validate implements Validator. A new tenant's name is its ID.
func (c *CreateTenant) Validate() error {
	t := &c.Tenant
	var name, deleted, ret error
	if t.Retention != nil {
		ret = checkRetention("tenant.retention", *t.Retention)
	}
	if t.Name != t.ID {
		name = invalid("tenant.name %q must equal tenant.id %q: a tenant's name is its ID", t.Name, t.ID)
	}
	if t.Deleted() {
		deleted = invalid("a new tenant cannot be deleted")
	}
	return checkAll(c, CheckTenantName(t.ID), name, deleted,
		validText("tenant.plan", t.Plan, MaxNameLen, ""), validText("tenant.created_by", t.CreatedBy, MaxTextLen, ""),
		t.Limits.validate(), ret)
}

// Validate implements Validator.
func (c *UpdateTenant) Validate() error {
	var plan, jobs, conc, workers, cpu error
	if c.Plan != nil {
		plan = validText("plan", *c.Plan, MaxNameLen, "")
	}
	if c.MaxJobs != nil {
		jobs = checkLimit("max_jobs", *c.MaxJobs)
	}
	if c.MaxConcurrentJobs != nil {
		conc = checkLimit("max_concurrent_jobs", *c.MaxConcurrentJobs)
	}
	if c.MaxWorkers != nil {
		workers = checkLimit("max_workers", *c.MaxWorkers)
	}
	if c.MaxCPU != nil {
		cpu = checkCPULimit("max_cpu", *c.MaxCPU)
	}
	var ret error
	switch {
	case c.Retention != nil && c.DefaultRetention:
		ret = invalid("retention and default_retention exclude each other")
	case c.Retention != nil:
		ret = checkRetention("retention", *c.Retention)
	}
	return checkAll(c, checkID("id", c.ID), plan, jobs, conc, workers, cpu, ret)
}

// Validate implements Validator.
func (c *DeleteTenant) Validate() error {
	return checkAll(c, checkID("id", c.ID))
}

// Validate implements Validator.
func (c *AdoptOrphans) Validate() error {
	return checkAll(c, checkID("tenant_id", c.TenantID))
}

// Validate implements Validator.
func (c *CreateAPIKey) Validate() error {
	k := c.Key
	var role error
	if !slices.Contains([]Role{RoleSuperAdmin, RoleTenantAdmin, RoleOperator, RoleViewer}, k.Role) {
		role = invalid("key.role %q is not a known role", k.Role)
	}
	return checkAll(c, checkID("key.id", k.ID), checkID("key.tenant_id", k.TenantID),
		validText("key.user", k.User, MaxNameLen, ""), validText("key.name", k.Name, MaxNameLen, ""),
		checkScopes("key", k.Scopes), role)
}

// Validate implements Validator.
func (c *RevokeAPIKey) Validate() error {
	return checkAll(c, checkID("id", c.ID))
}

// Validate implements Validator.
func (c *RegisterWorker) Validate() error {
	w := c.Worker
	var counts error
	if w.Slots < 0 || w.CPUs < 0 || w.MemoryMB < 0 {
		counts = invalid("worker slots, cpus and memory_mb must not be negative")
	}
	for k, n := range w.EncoderSessions {
		if n < 0 && counts == nil {
			counts = invalid("worker.encoder_sessions[%s] must not be negative", k)
		}
	}
	var tenant, token error
	if w.TenantID != "" {
		tenant = checkID("worker.tenant_id", w.TenantID)
	}
	if w.TokenID != "" {
		token = checkID("worker.token_id", w.TokenID)
	}
	return checkAll(c, checkID("worker.id", w.ID), tenant, token, validText("worker.name", w.Name, MaxNameLen, ""),
		counts)
}

// Validate implements Validator. The job must be new (no attempt yet) and
// its spec compiled: Compile's defaults filled in and its bounds met.
func (c *SubmitJob) Validate() error {
	j := &c.Job
	return checkAll(c, checkID("job.id", j.ID), checkID("job.tenant_id", j.TenantID),
		checkRetryOf(j.RetryOf), checkNew(j),
		j.Spec.validateCompiled(), j.Plan.validate())
}

func checkRetryOf(id string) error {
	if id == "" {
		return nil
	}
	return checkID("job.retry_of", id)
}

func checkNew(j *Job) error {
	if j.Attempt != 0 || j.Retries != 0 || j.WorkerID != "" {
		return invalid("a submitted job has no attempt, retry or worker yet")
	}
	return nil
}

// validateCompiled checks a spec after Compile: every default filled in
// and every bound met.
func (s *JobSpec) validateCompiled() error {
	switch {
	case len(s.Name) > MaxNameLen:
		return invalid("name is longer than %d bytes", MaxNameLen)
	case !slices.Contains(Queues, s.Queue):
		return invalid("queue %q is not a known queue", s.Queue)
	case !slices.Contains(Priorities, s.Priority):
		return invalid("priority %q is not a known priority", s.Priority)
	case s.MaxRetries == nil || *s.MaxRetries < 0 || *s.MaxRetries > MaxMaxRetries:
		return invalid("max_retries must be set, between 0 and %d", MaxMaxRetries)
	case s.Timeout < Duration(time.Second) || s.Timeout > MaxTimeout:
		return invalid("timeout must be between 1s and %s", time.Duration(MaxTimeout))
	case s.AcquireTimeout < Duration(time.Second) || s.AcquireTimeout > MaxAcquireTimeout:
		return invalid("acquire_timeout must be between 1s and %s", time.Duration(MaxAcquireTimeout))
	case s.Resources.CPU < 0 || s.Resources.CPU > 256 || s.Resources.MemoryMB < 0 || s.Resources.MemoryMB > 1<<20:
		return invalid("resources out of range (cpu 0..256, memory_mb 0..1048576)")
	case len(s.Outputs) == 0 || len(s.Outputs) > MaxOutputs:
		return invalid("a job has 1 to %d outputs", MaxOutputs)
	}
	return nil
}

// validate checks a compiled plan: known kinds and codecs, 1 to MaxOutputs
// renditions, and tenant paths within the path bounds.
func (p *Plan) validate() error {
	kinds := []string{KindTestsrc, KindFile, KindHTTP, KindRTMP, KindSRT}
	if !slices.Contains(kinds, p.Input.Kind) {
		return invalid("plan input kind %q is not known", p.Input.Kind)
	}
	if err := checkTenantPath("plan.input.path", p.Input.Path, p.Input.Kind == KindFile); err != nil {
		return err
	}
	if len(p.Outputs) == 0 || len(p.Outputs) > MaxOutputs {
		return invalid("a plan has 1 to %d outputs", MaxOutputs)
	}
	if p.Hardware != HardwareAny && p.Hardware != HardwareSoftware && !slices.Contains(HardwareKinds, p.Hardware) {
		return invalid("plan hardware %q is not known", p.Hardware)
	}
	for i, r := range p.Outputs {
		field := "plan.outputs[" + strconv.Itoa(i) + "]"
		switch {
		case r.Kind != KindFile && r.Kind != KindRTMP:
			return invalid("%s: kind %q is not an output kind", field, r.Kind)
		case !slices.Contains(videoCodecs, r.Video.Codec):
			return invalid("%s: video codec %q is not known", field, r.Video.Codec)
		case r.Video.Width < 16 || r.Video.Height < 16 || r.Video.Width > 7680 || r.Video.Height > 4320:
			return invalid("%s: video size out of range", field)
		case r.Video.FPS < MinFPS || r.Video.FPS > MaxFPS:
			return invalid("%s: video fps must be between %d and %d", field, MinFPS, MaxFPS)
		}
		if err := checkTenantPath(field+".path", r.Path, r.Kind == KindFile); err != nil {
			return err
		}
	}
	return nil
}

// checkTenantPath checks a tenant-relative path: required for a file, at
// most MaxPathLen bytes, components of at most MaxPathComponentLen bytes,
// none empty, "." or "..", and not absolute.
func checkTenantPath(field, p string, required bool) error {
	if p == "" {
		if required {
			return invalid("%s is required", field)
		}
		return nil
	}
	if err := validPath(p); err != nil {
		return invalid("%s: %s", field, err.(*Error).Message)
	}
	return nil
}

// validPath checks a tenant-relative path: at most MaxPathLen bytes,
// relative, components of at most MaxPathComponentLen bytes, none empty,
// "." or "..", and no control characters. It returns a *Error with
// CodeInvalidURL.
func validPath(p string) error {
	if len(p) > MaxPathLen {
		return Errorf(CodeInvalidURL, "path is longer than %d bytes", MaxPathLen)
	}
	if err := validText("path", p, MaxPathLen, ""); err != nil {
		return Errorf(CodeInvalidURL, "%s", err.(*Error).Message)
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return Errorf(CodeInvalidURL, "path has an empty, '.' or '..' component")
		}
		if len(seg) > MaxPathComponentLen {
			return Errorf(CodeInvalidURL, "path has a component longer than %d bytes", MaxPathComponentLen)
		}
	}
	return nil
}

// Validate implements Validator.
func (c *AssignJob) Validate() error {
	return checkAll(c, checkReport(Report{JobID: c.JobID, WorkerID: c.WorkerID, Attempt: c.Attempt}))
}

// Validate implements Validator.
func (c *StartJob) Validate() error {
	return checkAll(c, checkReport(c.Report))
}

// Validate implements Validator.
func (c *ProgressJob) Validate() error {
	return checkAll(c, checkReport(c.Report), c.Progress.validate())
}

// Validate implements Validator.
func (c *ExitJob) Validate() error {
	return checkAll(c, checkReport(c.Report))
}

func (p *Progress) validate() error {
	if p.Percent < 0 || p.Percent > 100 || p.FPS < 0 || p.Speed < 0 || p.Frame < 0 {
		return invalid("progress percent must be 0..100, and frame, fps and speed not negative")
	}
	if p.CPU < 0 || p.CPU > 4096 || p.MemoryMB < 0 || p.MemoryMB > 1<<24 {
		return invalid("progress cpu must be 0..4096 and memory_mb 0..16777216")
	}
	return nil
}

// Validate implements Validator.
func (c *FinishJob) Validate() error {
	var progress, code error
	if c.Progress != nil {
		progress = c.Progress.validate()
	}
	if c.Error != nil && c.Error.Code == "" {
		code = invalid("error.code is required")
	}
	return checkAll(c, checkReport(c.Report), progress, code)
}

// Validate implements Validator.
func (c *CancelJob) Validate() error {
	return checkAll(c, checkID("job_id", c.JobID))
}

// Validate implements Validator.
func (c *PauseJob) Validate() error {
	return checkAll(c, checkID("job_id", c.JobID))
}

// Validate implements Validator.
func (c *ResumeJob) Validate() error {
	return checkAll(c, checkID("job_id", c.JobID))
}

// Validate implements Validator.
func (c *RequeueJob) Validate() error {
	var code error
	if c.Reason.Code == "" {
		code = invalid("reason.code is required")
	}
	return checkAll(c, checkReport(c.Report), code)
}

// Validate implements Validator.
func (c *ExpireJob) Validate() error {
	var code error
	if c.Code != CodeAcquireTimeout && c.Code != CodeNoCapableWorker {
		code = invalid("code must be %s or %s", CodeAcquireTimeout, CodeNoCapableWorker)
	}
	return checkAll(c, checkID("job_id", c.JobID), code)
}

// Validate implements Validator.
func (c *MarkWorkerDown) Validate() error {
	return checkAll(c, checkID("worker_id", c.WorkerID))
}

// Validate implements Validator.
func (c *DrainWorker) Validate() error {
	return checkAll(c, checkID("worker_id", c.WorkerID))
}

// Validate implements Validator.
func (c *CreateWorkerToken) Validate() error {
	t := c.Token
	var tenant, hash, bound error
	if t.TenantID != "" {
		tenant = checkID("token.tenant_id", t.TenantID)
	}
	if len(t.Hash) != 32 {
		hash = invalid("token.hash must be a SHA-256 (32 bytes)")
	}
	if t.WorkerID != "" || t.Revoked {
		bound = invalid("a new worker token is neither bound nor revoked")
	}
	return checkAll(c, checkID("token.id", t.ID), tenant, validText("token.name", t.Name, MaxNameLen, ""),
		validText("token.created_by", t.CreatedBy, MaxNameLen, ""), hash, bound)
}

// Validate implements Validator.
func (c *RevokeWorkerToken) Validate() error {
	return checkAll(c, checkID("id", c.ID))
}
