package cluster

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter gives hashicorp/raft an hclog.Logger that writes to slog.
type hclogAdapter struct {
	l    *slog.Logger
	name string
	args []any
}

// NewHCLogger returns an hclog.Logger that logs through l.
func NewHCLogger(l *slog.Logger, name string) hclog.Logger {
	return &hclogAdapter{l: l, name: name}
}

var _ hclog.Logger = (*hclogAdapter)(nil)

func toSlog(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace, hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	}
	return slog.LevelInfo
}

func (a *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	lvl := toSlog(level)
	if !a.l.Enabled(context.Background(), lvl) {
		return
	}
	all := append(append([]any{"component", a.name}, a.args...), args...)
	for i := 1; i < len(all); i += 2 {
		all[i] = hclogValue(all[i])
	}
	a.l.Log(context.Background(), lvl, msg, all...)
}

// hclogValue renders hclog's formatting wrappers as hclog would, so that
// the log shows "100.00%", not "[%0.2f%% 100]"; other values pass as they
// are.
func hclogValue(v any) any {
	switch v := v.(type) {
	case hclog.Format:
		if len(v) == 0 {
			return ""
		}
		format, ok := v[0].(string)
		if !ok {
			return fmt.Sprint(v...)
		}
		return fmt.Sprintf(format, v[1:]...)
	case hclog.Hex:
		return fmt.Sprintf("0x%x", int(v))
	case hclog.Octal:
		return fmt.Sprintf("0%o", int(v))
	case hclog.Binary:
		return fmt.Sprintf("0b%b", int(v))
	case hclog.Quote:
		return fmt.Sprintf("%q", string(v))
	case hclog.CapturedStacktrace:
		return string(v)
	}
	return v
}

func (a *hclogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *hclogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *hclogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *hclogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *hclogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }

func (a *hclogAdapter) enabled(l slog.Level) bool { return a.l.Enabled(context.Background(), l) }
func (a *hclogAdapter) IsTrace() bool             { return false }
func (a *hclogAdapter) IsDebug() bool             { return a.enabled(slog.LevelDebug) }
func (a *hclogAdapter) IsInfo() bool              { return a.enabled(slog.LevelInfo) }
func (a *hclogAdapter) IsWarn() bool              { return a.enabled(slog.LevelWarn) }
func (a *hclogAdapter) IsError() bool             { return a.enabled(slog.LevelError) }
func (a *hclogAdapter) ImpliedArgs() []any        { return a.args }
func (a *hclogAdapter) Name() string              { return a.name }
func (a *hclogAdapter) SetLevel(hclog.Level)      {}
func (a *hclogAdapter) GetLevel() hclog.Level     { return hclog.Info }

func (a *hclogAdapter) With(args ...any) hclog.Logger {
	return &hclogAdapter{l: a.l, name: a.name, args: append(append([]any{}, a.args...), args...)}
}

func (a *hclogAdapter) Named(name string) hclog.Logger {
	return &hclogAdapter{l: a.l, name: a.name + "." + name, args: a.args}
}

func (a *hclogAdapter) ResetNamed(name string) hclog.Logger {
	return &hclogAdapter{l: a.l, name: name, args: a.args}
}

func (a *hclogAdapter) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return slog.NewLogLogger(a.l.Handler(), slog.LevelInfo)
}

func (a *hclogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return a.StandardLogger(nil).Writer()
}

// NewStdLogger returns a standard library logger, for libraries that take
// one (memberlist, net/http's ErrorLog), that logs each line through l:
// a leading "[LEVEL] " (memberlist's DEBUG, INFO, WARN, ERR) sets the
// level and is removed, with the "name: " that may follow it; other lines
// log at level.
func NewStdLogger(l *slog.Logger, name string, level slog.Level) *log.Logger {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return log.New(&stdWriter{l: l, name: name, level: level}, "", 0)
}

type stdWriter struct {
	l     *slog.Logger
	name  string
	level slog.Level
}

var stdLevels = map[string]slog.Level{
	"TRACE": slog.LevelDebug, "DEBUG": slog.LevelDebug, "INFO": slog.LevelInfo,
	"WARN": slog.LevelWarn, "ERR": slog.LevelError, "ERROR": slog.LevelError,
}

func (w *stdWriter) Write(p []byte) (int, error) {
	msg, lvl := strings.TrimRight(string(p), "\r\n"), w.level
	if rest, ok := strings.CutPrefix(msg, "["); ok {
		if tag, after, ok := strings.Cut(rest, "] "); ok {
			if l, known := stdLevels[tag]; known {
				lvl, msg = l, strings.TrimPrefix(after, w.name+": ")
			}
		}
	}
	w.l.Log(context.Background(), lvl, msg, "component", w.name)
	return len(p), nil
}
