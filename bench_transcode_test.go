package main

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cli"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
	"github.com/ffrtmp/ffrtmp/worker"
)

// BenchmarkTranscodeThroughput runs the same batch of real transcodes
// directly (the ffmpeg commands the worker builds, started by hand, as
// many at once as the worker has slots) and through ffrtmp dev (submit,
// schedule, run, probe, report), in alternating rounds within one run
// (FFRTMP_BENCH_ROUNDS, default 3; direct first in odd rounds, ffrtmp
// first in even ones), so that the machine's drift between runs falls on
// both sides. It reports the median wall times and the median of the
// rounds' ratios (platform / direct), and from the jobs' own timestamps
// where the platform's time went. Two batches: 8 jobs of 6 s, and 5 jobs
// of 2 s (where per-job overhead shows most).
//
//	go test -run '^$' -bench TranscodeThroughput -benchtime 1x .
//	go test -run '^$' -bench 'TranscodeThroughput/5x2s' -benchtime 1x .
func BenchmarkTranscodeThroughput(b *testing.B) {
	for _, c := range []struct{ jobs, seconds int }{{8, 6}, {5, 2}} {
		b.Run(fmt.Sprintf("%dx%ds", c.jobs, c.seconds), func(b *testing.B) {
			for range b.N {
				transcodeThroughput(b, c.jobs, c.seconds, 2)
			}
		})
	}
}

// transcodeThroughput runs jobs transcodes of seconds of 720p30 test
// pattern, slots at a time, directly and through one ffrtmp dev, in
// alternating rounds.
func transcodeThroughput(b *testing.B, jobs, seconds, slots int) {
	rounds := 3
	if v, err := strconv.Atoi(os.Getenv("FFRTMP_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	spec := fsm.JobSpec{Scenario: "720p30-h264", Input: fsm.Input{URL: "testsrc://?duration=" + strconv.Itoa(seconds)},
		Outputs: []fsm.Output{{URL: "file:///tp/out.mp4"}}}
	plan, err := spec.Compile(fsm.Policy{})
	if err != nil {
		b.Fatal(err)
	}
	found, err := worker.ProbeEncoders(context.Background(), "ffmpeg")
	if err != nil {
		b.Fatal(err)
	}

	root := b.TempDir()
	vars := map[string]string{"XDG_CONFIG_HOME": filepath.Join(root, "config"), "HOME": root}
	getenv := func(k string) string { return vars[k] }
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	dataDir := filepath.Join(root, "data")
	go func() {
		done <- cli.RunDev(ctx, cli.DevConfig{DataDir: dataDir, HTTPAddr: "127.0.0.1:0",
			RaftAddr: "127.0.0.1:0", Workers: 1, Slots: slots, Out: io.Discard, Getenv: getenv,
			Logger: discardLogger(), OnReady: func(u string) { ready <- u }})
	}()
	defer func() { cancel(); <-done }()
	<-ready
	cfg, err := cli.LoadConfig(getenv)
	if err != nil {
		b.Fatal(err)
	}
	client, err := cli.NewClient(cfg.Addr, cfg.APIKey)
	if err != nil {
		b.Fatal(err)
	}
	// Wait until the worker has registered (it probes encoders first).
	for {
		ws, _ := client.ListWorkers(ctx)
		if len(ws) > 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	// direct runs the batch by hand and returns its wall time and the
	// ffmpeg runs' durations.
	direct := func() (time.Duration, []time.Duration) {
		dir := b.TempDir()
		sem := make(chan struct{}, slots)
		var wg sync.WaitGroup
		runs := make([]time.Duration, jobs)
		start := time.Now()
		for i := range jobs {
			args, err := worker.BuildArgs(plan, worker.Choose(found), "", []string{filepath.Join(dir, fmt.Sprintf("%d.mp4", i))}, 0, nil)
			if err != nil {
				b.Fatal(err)
			}
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				cmd := exec.Command("ffmpeg", args...)
				cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
				t0 := time.Now()
				if err := cmd.Run(); err != nil {
					b.Error(err)
				}
				runs[i] = time.Since(t0)
			}()
		}
		wg.Wait()
		return time.Since(start), runs
	}
	// platform submits the batch (outputs under tp/r<round>/) and returns
	// the time from the first submit until the client saw the last job
	// succeed, and the jobs as they ended.
	platform := func(round int) (time.Duration, []*server.Job) {
		start := time.Now()
		finals := make([]*server.Job, jobs)
		seen := make([]time.Time, jobs) // when the client saw each job end
		var watching sync.WaitGroup
		for i := range jobs {
			s := spec
			s.Outputs = []fsm.Output{{URL: fmt.Sprintf("file:///tp/r%d/%d.mp4", round, i)}}
			j, err := client.SubmitJob(ctx, &s)
			if err != nil {
				b.Fatal(err)
			}
			watching.Add(1)
			go func() {
				defer watching.Done()
				last, err := client.WatchJob(ctx, j.ID, func(*server.Job) {})
				finals[i], seen[i] = last, time.Now()
				if err != nil || last == nil {
					b.Errorf("watch job %s: %v", j.ID, err)
				}
			}()
		}
		watching.Wait()
		if b.Failed() {
			b.FailNow()
		}
		for _, j := range finals {
			if j.State != fsm.JobSucceeded {
				b.Fatalf("job %s: %s %+v", j.ID, j.State, j.Error)
			}
		}
		return slices.MaxFunc(seen, time.Time.Compare).Sub(start), finals
	}

	var directs, platforms, ratios []float64
	var cpuDirect, cpuPlatform, cpuSelf time.Duration
	var tl timeline
	for r := range rounds {
		var d, p time.Duration
		var runs []time.Duration
		var finals []*server.Job
		for k := range 2 {
			c0 := cpuTimes(b)
			if (k+r)%2 == 0 {
				d, runs = direct()
				c1 := cpuTimes(b)
				cpuDirect += c1[1] - c0[1]
			} else {
				p, finals = platform(r)
				c1 := cpuTimes(b)
				cpuPlatform += c1[1] - c0[1]
				cpuSelf += c1[0] - c0[0]
			}
		}
		directs, platforms = append(directs, d.Seconds()), append(platforms, p.Seconds())
		ratios = append(ratios, p.Seconds()/d.Seconds())
		slices.Sort(runs)
		b.Logf("round %d: %d jobs of %d s, %d at a time: direct %s (ffmpeg runs %s..%s), through ffrtmp %s: %.2fx",
			r+1, jobs, seconds, slots, d.Round(time.Millisecond), runs[0].Round(time.Millisecond),
			runs[len(runs)-1].Round(time.Millisecond), p.Round(time.Millisecond), p.Seconds()/d.Seconds())
		tl.add(b, finals, ffmpegExits(b, filepath.Join(dataDir, "media"), fmt.Sprintf("r%d", r), jobs), slots)
	}
	b.ReportMetric(median(directs), "direct-s")
	b.ReportMetric(median(platforms), "platform-s")
	b.ReportMetric(median(ratios), "platform/direct")
	n := float64(rounds)
	b.Logf("median of %d rounds: direct %.3f s, through ffrtmp %.3f s, ratio %.3f (rounds %.3f)", rounds,
		median(directs), median(platforms), median(ratios), ratios)
	b.Logf("CPU per round: direct ffmpeg %.2f s; through ffrtmp: ffmpeg and ffprobe %.2f s, the ffrtmp process (node, worker, this client) %.2f s",
		cpuDirect.Seconds()/n, cpuPlatform.Seconds()/n, cpuSelf.Seconds()/n)
	tl.report(b)
}

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// cpuTimes returns the user plus system CPU time of this process and of
// its waited-for children.
func cpuTimes(b *testing.B) [2]time.Duration {
	var out [2]time.Duration
	for i, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var ru syscall.Rusage
		if err := syscall.Getrusage(who, &ru); err != nil {
			b.Fatal(err)
		}
		out[i] = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return out
}

// ffmpegExits returns, by job number, when ffmpeg last wrote output
// <round>/i.mp4 under media: the end of its run, since the mp4 trailer is
// written last. The worker publishes an output after its finish report
// was accepted, which may be after the client saw the job succeed: wait
// for them.
func ffmpegExits(b *testing.B, media, round string, jobs int) []time.Time {
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		out := publishedExits(b, media, round, jobs)
		if !slices.ContainsFunc(out, time.Time.IsZero) {
			return out
		}
		if time.Now().After(deadline) {
			b.Fatalf("outputs not published: %v", out)
		}
	}
}

func publishedExits(b *testing.B, media, round string, jobs int) []time.Time {
	out := make([]time.Time, jobs)
	err := filepath.WalkDir(media, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Base(filepath.Dir(path)) != round {
			return err
		}
		var i int
		if _, err := fmt.Sscanf(d.Name(), "%d.mp4", &i); err == nil && i < jobs {
			fi, err := os.Stat(path)
			if err != nil {
				return err
			}
			out[i] = fi.ModTime()
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return out
}

// timeline sums, over rounds, where the platform's time went, from the
// jobs' own timestamps.
type timeline struct {
	jobs, freed          int
	wait, reporting, gap time.Duration
}

// add logs, for one round, each job's submitted_at → started_at,
// started_at → its ffmpeg's end (about its ffmpeg run), its ffmpeg's end
// → finished_at, and for a job that took a freed slot, the previous
// ffmpeg's end and finished_at → its started_at.
func (t *timeline) add(b *testing.B, jobs []*server.Job, exits []time.Time, slots int) {
	type ev struct {
		i    int
		exit time.Time
		fin  time.Time
	}
	starts := make([]int, len(jobs))
	for i := range starts {
		starts[i] = i
	}
	slices.SortFunc(starts, func(x, y int) int { return jobs[x].StartedAt.Compare(jobs[y].StartedAt) })
	ends := make([]ev, len(jobs))
	for i, j := range jobs {
		ends[i] = ev{i, exits[i], j.FinishedAt}
	}
	slices.SortFunc(ends, func(x, y ev) int { return x.exit.Compare(y.exit) })
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }
	for k, i := range starts {
		j := jobs[i]
		line := fmt.Sprintf("job %d: submitted->running %s, running->ffmpeg end %s, ffmpeg end->finished %s", i,
			ms(j.StartedAt.Sub(j.SubmittedAt)), ms(exits[i].Sub(j.StartedAt)), ms(j.FinishedAt.Sub(exits[i])))
		t.wait += j.StartedAt.Sub(j.SubmittedAt)
		t.reporting += j.FinishedAt.Sub(exits[i])
		t.jobs++
		if k >= slots {
			prev := ends[k-slots]
			line += fmt.Sprintf(", slot freed by job %d: its ffmpeg end->started %s, its finished->started %s",
				prev.i, ms(j.StartedAt.Sub(prev.exit)), ms(j.StartedAt.Sub(prev.fin)))
			t.gap += j.StartedAt.Sub(prev.exit)
			t.freed++
		}
		b.Log(line)
	}
}

// report reports the means over every round.
func (t *timeline) report(b *testing.B) {
	b.ReportMetric(t.wait.Seconds()*1000/float64(t.jobs), "submit-to-running-ms/job")
	b.ReportMetric(t.reporting.Seconds()*1000/float64(t.jobs), "exit-to-finished-ms/job")
	if t.freed > 0 {
		b.ReportMetric(t.gap.Seconds()*1000/float64(t.freed), "exit-to-next-start-ms/slot")
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
