package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	json "github.com/go-json-experiment/json/v1"
	"github.com/urfave/cli/v2"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

func jobsCommand() *cli.Command {
	idAction := func(fn func(ctx context.Context, c *Client, out Output, id string) error) cli.ActionFunc {
		return func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("%s takes one job ID", c.Command.Name)
			}
			client, out, err := clientAndOutput(c)
			if err != nil {
				return err
			}
			return fn(c.Context, client, out, c.Args().First())
		}
	}
	action := func(name, usage string) *cli.Command {
		return &cli.Command{
			Name: name, Usage: usage, ArgsUsage: "ID",
			Action: idAction(func(ctx context.Context, c *Client, out Output, id string) error {
				return JobAction(ctx, c, out, id, name)
			}),
		}
	}
	return &cli.Command{
		Name:  "jobs",
		Usage: "submit and manage jobs",
		Subcommands: []*cli.Command{
			{
				Name:  "submit",
				Usage: "submit a job and print its ID (a JSON array in --spec: many jobs, one result each)",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "spec", Usage: "whole job spec as JSON from FILE, or - for stdin; a JSON array of specs submits them all with POST /v1/jobs/batch; other flags override their fields"},
					&cli.StringFlag{Name: "name", Usage: "job name"},
					&cli.StringFlag{Name: "scenario", Usage: "preset <height>p<fps>-<codec>, e.g. 720p30-h264"},
					&cli.StringFlag{Name: "input", Usage: "input URL: testsrc://?duration=5, file:///in.mp4, rtmp://…"},
					&cli.StringSliceFlag{Name: "output", Usage: "output URL (repeatable for a ladder): file:///out.mp4, rtmp://…"},
					// The defaults shown are the server's (fsm), which
					// applies them to a spec that leaves a field out;
					// only a flag given on the command line is sent.
					&cli.StringFlag{Name: "priority", Value: string(fsm.PriorityMedium), Usage: "high, medium or low"},
					&cli.StringFlag{Name: "queue", Value: string(fsm.QueueDefault), Usage: "live, default or batch"},
					&cli.DurationFlag{Name: "timeout", Value: time.Duration(fsm.DefaultTimeout), Usage: "run timeout"},
					&cli.DurationFlag{Name: "acquire-timeout", Value: time.Duration(fsm.DefaultAcquireTimeout), Usage: "how long the job may wait for a worker"},
					&cli.IntFlag{Name: "max-retries", Value: fsm.DefaultMaxRetries, Usage: "retries after a failed attempt"},
				},
				Action: func(c *cli.Context) error {
					client, out, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					specs, many, err := specsFromFlags(c)
					if err != nil {
						return err
					}
					if many {
						return SubmitJobs(c.Context, client, out, specs)
					}
					return SubmitJob(c.Context, client, out, specs[0])
				},
			},
			{
				Name:  "list",
				Usage: "list jobs, newest first",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "state", Usage: "comma-separated states"},
					&cli.StringFlag{Name: "queue", Usage: "queue"},
					&cli.IntFlag{Name: "limit", Value: server.DefaultPageSize, Usage: fmt.Sprintf("page size (1 to %d)", server.MaxPageSize)},
					&cli.StringFlag{Name: "after", Usage: "cursor printed at the end of the previous page"},
				},
				Action: func(c *cli.Context) error {
					client, out, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					q := url.Values{}
					for _, k := range []string{"state", "queue", "after"} {
						if v := c.String(k); v != "" {
							q.Set(k, v)
						}
					}
					q.Set("limit", fmt.Sprint(c.Int("limit")))
					return ListJobs(c.Context, client, out, q)
				},
			},
			{
				Name:  "status",
				Usage: "count the active jobs by state and the queued ones by queue and priority, with the oldest queued age (your tenant's, or --tenant's)",
				Action: func(c *cli.Context) error {
					client, out, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					return JobsStatus(c.Context, client, out)
				},
			},
			{
				Name: "get", Usage: "show a job", ArgsUsage: "ID",
				Action: idAction(GetJob),
			},
			action("cancel", "cancel a job (stops ffmpeg)"),
			action("pause", "pause a running job"),
			action("resume", "resume a paused job"),
			action("retry", "submit a failed or canceled job again; prints the new job's ID"),
			{
				Name: "logs", Usage: "print a job's ffmpeg log", ArgsUsage: "ID",
				Action: idAction(func(ctx context.Context, c *Client, out Output, id string) error {
					text, err := c.JobLogs(ctx, id)
					if err != nil {
						return err
					}
					_, err = io.WriteString(out.W, text)
					return err
				}),
			},
			{
				Name: "watch", Usage: "follow a job's progress until it finishes; exits non-zero unless it succeeded", ArgsUsage: "ID",
				Action: idAction(WatchJob),
			},
		},
	}
}

// Output is where and how a command prints.
type Output struct {
	W    io.Writer
	JSON bool
	TTY  bool
}

func clientAndOutput(c *cli.Context) (*Client, Output, error) {
	client, err := clientFrom(c)
	if err != nil {
		return nil, Output{}, err
	}
	js, err := outputJSON(c)
	if err != nil {
		return nil, Output{}, err
	}
	out := Output{W: envOf(c).Stdout, JSON: js}
	if f, ok := out.W.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			out.TTY = true
		}
	}
	return client, out, nil
}

// maxSpecFile bounds a --spec file: a batch of specs.
const maxSpecFile = 16 << 20

// specsFromFlags builds the job specs of a submit from --spec and the
// field flags, which override the fields of every spec. many is set when
// --spec holds a JSON array (a batch, possibly of one).
func specsFromFlags(c *cli.Context) (specs []*fsm.JobSpec, many bool, err error) {
	if path := c.String("spec"); path != "" {
		var r io.Reader
		if path == "-" {
			r = envOf(c).Stdin
		} else {
			f, err := os.Open(path)
			if err != nil {
				return nil, false, fmt.Errorf("read spec: %w", err)
			}
			defer f.Close()
			r = f
		}
		data, err := io.ReadAll(io.LimitReader(r, maxSpecFile))
		if err != nil {
			return nil, false, fmt.Errorf("read spec: %w", err)
		}
		var raws []json.RawMessage
		if trimmed := strings.TrimLeftFunc(string(data), unicode.IsSpace); strings.HasPrefix(trimmed, "[") {
			if err := json.Unmarshal(data, &raws); err != nil {
				return nil, false, fmt.Errorf("parse spec %s: %w", path, err)
			}
			if len(raws) == 0 {
				return nil, false, fmt.Errorf("spec %s is an empty array", path)
			}
			many = true
		} else {
			raws = []json.RawMessage{data}
		}
		for i, raw := range raws {
			spec, err := server.DecodeJobSpec(raw)
			if err != nil {
				if many {
					return nil, false, fmt.Errorf("parse spec %s, item %d: %w", path, i, err)
				}
				return nil, false, fmt.Errorf("parse spec %s: %w", path, err)
			}
			specs = append(specs, &spec)
		}
	} else {
		specs = []*fsm.JobSpec{{}}
	}
	for _, spec := range specs {
		if err := specFlags(c, spec); err != nil {
			return nil, false, err
		}
	}
	return specs, many, nil
}

// specFlags applies the field flags to spec and checks that it has an
// input and an output.
func specFlags(c *cli.Context, spec *fsm.JobSpec) error {
	if c.IsSet("name") {
		spec.Name = c.String("name")
	}
	if c.IsSet("scenario") {
		spec.Scenario = c.String("scenario")
	}
	if c.IsSet("input") {
		spec.Input.URL = c.String("input")
	}
	if c.IsSet("output") {
		spec.Outputs = nil
		for _, o := range c.StringSlice("output") {
			spec.Outputs = append(spec.Outputs, fsm.Output{URL: o})
		}
	}
	if c.IsSet("priority") {
		spec.Priority = fsm.Priority(c.String("priority"))
	}
	if c.IsSet("queue") {
		spec.Queue = fsm.Queue(c.String("queue"))
	}
	if c.IsSet("timeout") {
		spec.Timeout = fsm.Duration(c.Duration("timeout"))
	}
	if c.IsSet("acquire-timeout") {
		spec.AcquireTimeout = fsm.Duration(c.Duration("acquire-timeout"))
	}
	if c.IsSet("max-retries") {
		n := c.Int("max-retries")
		spec.MaxRetries = &n
	}
	if spec.Input.URL == "" || len(spec.Outputs) == 0 {
		return errors.New("a job needs --input and at least one --output (or --spec)")
	}
	return nil
}

// SubmitJob submits spec and prints the new job's ID (or the job as JSON).
func SubmitJob(ctx context.Context, c *Client, out Output, spec *fsm.JobSpec) error {
	j, err := c.SubmitJob(ctx, spec)
	if err != nil {
		return err
	}
	if out.JSON {
		return printJSON(out.W, j)
	}
	_, err = fmt.Fprintln(out.W, j.ID)
	return err
}

// SubmitJobs submits specs in batches and prints one row per spec: its
// index, the status of its item and its job ID or error (or the results
// as JSON). It fails if any spec was refused.
func SubmitJobs(ctx context.Context, c *Client, out Output, specs []*fsm.JobSpec) error {
	results, err := c.SubmitJobs(ctx, specs)
	if err != nil {
		return err
	}
	refused := 0
	for _, r := range results {
		if r.Error != nil {
			refused++
		}
	}
	if out.JSON {
		if err := printJSON(out.W, results); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(out.W, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ITEM\tSTATUS\tJOB\tERROR")
		for i, r := range results {
			job, msg := "-", "-"
			if r.Job != nil {
				job = cell(r.Job.ID)
			}
			if r.Error != nil {
				msg = cell(string(r.Error.Code) + ": " + r.Error.Message)
			}
			fmt.Fprintf(tw, "%d\t%d\t%s\t%s\n", i, r.Status, job, msg)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if refused > 0 {
		return fmt.Errorf("%d of %d specs were refused", refused, len(specs))
	}
	return nil
}

// ListJobs prints a page of jobs.
func ListJobs(ctx context.Context, c *Client, out Output, q url.Values) error {
	page, err := c.ListJobs(ctx, q)
	if err != nil {
		return err
	}
	if out.JSON {
		return printJSON(out.W, page)
	}
	tw := tabwriter.NewWriter(out.W, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tQUEUE\tPRIORITY\tSCENARIO\tPROGRESS\tSUBMITTED\tNAME")
	for _, j := range page.Jobs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cell(j.ID), cell(string(j.State)), cell(string(j.Spec.Queue)), cell(string(j.Spec.Priority)),
			dash(j.Spec.Scenario), percent(&j), j.SubmittedAt.Local().Format(time.DateTime), dash(j.Spec.Name))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if page.Next != "" {
		fmt.Fprintf(out.W, "more: --after %s\n", page.Next)
	}
	return nil
}

// dash returns s for a table cell (see cell), or "-" if it is empty.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return cell(s)
}

// cell makes a value safe to print in a table or a one-line row: control
// characters (tabs, newlines, terminal escapes), line separators and
// bidirectional overrides are shown as Go escapes, so that stored data,
// old or hostile, can neither break the layout nor drive the terminal.
func cell(s string) string {
	if strings.IndexFunc(s, unprintable) < 0 && utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"):
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unprintable(r):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// unprintable reports whether r must be escaped by cell.
func unprintable(r rune) bool {
	return unicode.IsControl(r) || unicode.In(r, unicode.Zl, unicode.Zp) ||
		(r >= '\u202a' && r <= '\u202e') || (r >= '\u2066' && r <= '\u2069')
}

func percent(j *server.Job) string {
	switch {
	case j.State == fsm.JobSucceeded:
		return "100%"
	case j.Progress != nil:
		return fmt.Sprintf("%.0f%%", j.Progress.Percent)
	}
	return "-"
}

// JobsStatus prints GET /v1/jobs/summary: the active jobs by state, the
// queued ones by queue and priority, and how long the oldest has waited
// (as of the answer's Date, so that the local clock does not matter).
func JobsStatus(ctx context.Context, c *Client, out Output) error {
	s, at, err := c.JobSummary(ctx)
	if err != nil {
		return err
	}
	if out.JSON {
		return printJSON(out.W, s)
	}
	age := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return max(0, at.Sub(*t)).Round(time.Second).String()
	}
	tenant := s.Tenant
	if tenant == "" {
		tenant = "all tenants"
	}
	fmt.Fprintf(out.W, "Tenant: %s\n\n", cell(tenant))
	tw := tabwriter.NewWriter(out.W, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STATE\tJOBS")
	for _, st := range fsm.JobStates {
		if !st.Terminal() {
			fmt.Fprintf(tw, "%s\t%d\n", st, s.States[st])
		}
	}
	fmt.Fprintln(tw)
	fmt.Fprint(tw, "QUEUE\tQUEUED")
	for _, p := range fsm.Priorities {
		fmt.Fprintf(tw, "\t%s", strings.ToUpper(string(p)))
	}
	fmt.Fprintln(tw, "\tOLDEST")
	for _, q := range fsm.Queues {
		qs := s.Queues[q]
		fmt.Fprintf(tw, "%s\t%d", q, qs.Queued)
		for _, p := range fsm.Priorities {
			fmt.Fprintf(tw, "\t%d", qs.Priorities[p])
		}
		fmt.Fprintf(tw, "\t%s\n", age(qs.OldestQueuedAt))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	oldest := "none queued"
	if s.OldestQueuedAt != nil {
		oldest = "queued " + age(s.OldestQueuedAt) + " ago"
	}
	_, err = fmt.Fprintf(out.W, "\nOldest queued job: %s\n", oldest)
	return err
}

// GetJob prints one job.
func GetJob(ctx context.Context, c *Client, out Output, id string) error {
	j, err := c.GetJob(ctx, id)
	if err != nil {
		return err
	}
	if out.JSON {
		return printJSON(out.W, j)
	}
	tw := tabwriter.NewWriter(out.W, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, cell(v))
		}
	}
	ts := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.Local().Format(time.RFC3339)
	}
	row("ID", j.ID)
	row("Name", j.Spec.Name)
	row("Tenant", j.TenantID)
	row("State", string(j.State))
	row("Scenario", j.Spec.Scenario)
	row("Queue", fmt.Sprintf("%s (priority %s)", j.Spec.Queue, j.Spec.Priority))
	row("Input", j.Spec.Input.URL)
	row("Attempt", fmt.Sprintf("%d (retries %d of %d)", j.Attempt, j.Retries, *j.Spec.MaxRetries))
	row("Worker", j.WorkerID)
	row("Retry of", j.RetryOf)
	row("Submitted", ts(j.SubmittedAt))
	row("Started", ts(j.StartedAt))
	row("Finished", ts(j.FinishedAt))
	if j.Progress != nil && !j.State.Terminal() {
		row("Progress", fmt.Sprintf("%.1f%% (frame %d, %.1f fps, %.2fx)", j.Progress.Percent, j.Progress.Frame, j.Progress.FPS, j.Progress.Speed))
	}
	if j.Error != nil {
		row("Error", string(j.Error.Code)+": "+j.Error.Message)
	}
	if j.Result != nil {
		for _, o := range j.Result.Outputs {
			row("Output", fmt.Sprintf("%s (%s %dx%d %.2f fps, %.2fs, %d bytes)", o.URL, o.Codec, o.Width, o.Height, o.FPS, o.DurationSec, o.SizeBytes))
		}
	} else {
		for _, o := range j.Spec.Outputs {
			row("Output", o.URL)
		}
	}
	return tw.Flush()
}

// JobAction runs cancel, pause, resume or retry on a job and prints the
// result: the job's new state, or for retry the new job's ID.
func JobAction(ctx context.Context, c *Client, out Output, id, action string) error {
	j, err := c.JobAction(ctx, id, action)
	if err != nil {
		return err
	}
	if out.JSON {
		return printJSON(out.W, j)
	}
	if action == "retry" {
		_, err = fmt.Fprintln(out.W, j.ID)
		return err
	}
	_, err = fmt.Fprintf(out.W, "%s %s\n", j.ID, j.State)
	return err
}

// ErrJobNotSucceeded is returned by WatchJob when the job ends otherwise
// than succeeded, so that the command exits non-zero.
var ErrJobNotSucceeded = errors.New("job did not succeed")

// WatchJob follows a job until it finishes, drawing a progress bar on a
// terminal and printing a line per change otherwise.
func WatchJob(ctx context.Context, c *Client, out Output, id string) error {
	lastLine := ""
	j, err := c.WatchJob(ctx, id, func(j *server.Job) {
		if out.JSON {
			b, _ := json.Marshal(j)
			fmt.Fprintf(out.W, "%s\n", b)
			return
		}
		line := progressLine(j)
		if line == lastLine {
			return
		}
		lastLine = line
		if out.TTY {
			fmt.Fprintf(out.W, "\r\033[K%s", line)
		} else {
			fmt.Fprintln(out.W, line)
		}
	})
	if out.TTY && !out.JSON {
		fmt.Fprintln(out.W)
	}
	if err != nil {
		return err
	}
	if j == nil || j.State != fsm.JobSucceeded {
		if j != nil && j.Error != nil {
			return fmt.Errorf("%w: %s: %s: %s", ErrJobNotSucceeded, j.State, j.Error.Code, cell(j.Error.Message))
		}
		return ErrJobNotSucceeded
	}
	if !out.JSON && j.Result != nil {
		for _, o := range j.Result.Outputs {
			fmt.Fprintf(out.W, "output %s\n", cell(o.URL))
		}
	}
	return nil
}

func progressLine(j *server.Job) string {
	const width = 30
	pct := 0.0
	extra := ""
	if j.Progress != nil {
		pct = j.Progress.Percent
		extra = fmt.Sprintf("  frame %d  %.1f fps  %.2fx", j.Progress.Frame, j.Progress.FPS, j.Progress.Speed)
	}
	if j.State == fsm.JobSucceeded {
		pct = 100
	}
	n := int(pct / 100 * width)
	bar := strings.Repeat("#", n) + strings.Repeat(".", width-n)
	return fmt.Sprintf("%-9s [%s] %5.1f%%%s", j.State, bar, pct, extra)
}
