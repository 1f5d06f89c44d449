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
// twice in one run: directly (the ffmpeg commands the worker builds,
// started by hand, as many at once as the worker has slots) and through
// ffrtmp dev (submit, schedule, run, probe, report). It reports both
// wall times, throughputs and their ratio (direct / platform), and from
// the jobs' own timestamps where the platform's time went. Two batches:
// 8 jobs of 6 s, and 5 jobs of 2 s (where per-job overhead shows most).
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
// pattern, slots at a time, directly and then through ffrtmp dev.
func transcodeThroughput(b *testing.B, jobs, seconds, slots int) {
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

	// Direct.
	cpu0 := cpuTimes(b)
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
	direct := time.Since(start)
	cpu1 := cpuTimes(b)

	// Through the platform.
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
	start = time.Now()
	cpu2 := cpuTimes(b)
	finals := make([]*server.Job, jobs)
	seen := make([]time.Time, jobs) // when the client saw each job end
	var watching sync.WaitGroup
	for i := range jobs {
		s := spec
		s.Outputs = []fsm.Output{{URL: fmt.Sprintf("file:///tp/%d.mp4", i)}}
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
		return
	}
	platform := slices.MaxFunc(seen, time.Time.Compare).Sub(start)
	cpu3 := cpuTimes(b)
	for _, j := range finals {
		if j.State != fsm.JobSucceeded {
			b.Fatalf("job %s: %s %+v", j.ID, j.State, j.Error)
		}
	}
	exits := ffmpegExits(b, filepath.Join(dataDir, "media"), jobs)

	b.ReportMetric(direct.Seconds(), "direct-s")
	b.ReportMetric(platform.Seconds(), "platform-s")
	b.ReportMetric(platform.Seconds()/direct.Seconds(), "platform/direct")
	slices.Sort(runs)
	b.Logf("%d jobs of %d s, %d at a time: direct %s (ffmpeg runs %s..%s), through ffrtmp %s: %.2fx",
		jobs, seconds, slots, direct.Round(time.Millisecond), runs[0].Round(time.Millisecond),
		runs[len(runs)-1].Round(time.Millisecond), platform.Round(time.Millisecond), platform.Seconds()/direct.Seconds())
	b.Logf("CPU: direct ffmpeg %.2f s; through ffrtmp: ffmpeg and ffprobe %.2f s, the ffrtmp process (node, worker, this client) %.2f s",
		(cpu1[1] - cpu0[1]).Seconds(), (cpu3[1] - cpu2[1]).Seconds(), (cpu3[0] - cpu2[0]).Seconds())
	logTimeline(b, finals, exits, slots)
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

// ffmpegExits returns, by job number, when ffmpeg last wrote output i.mp4
// under media: the end of its run, since the mp4 trailer is written last.
// The worker publishes an output after its finish report was accepted,
// which may be after the client saw the job succeed: wait for them.
func ffmpegExits(b *testing.B, media string, jobs int) []time.Time {
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		out := publishedExits(b, media, jobs)
		if !slices.ContainsFunc(out, time.Time.IsZero) {
			return out
		}
		if time.Now().After(deadline) {
			b.Fatalf("outputs not published: %v", out)
		}
	}
}

func publishedExits(b *testing.B, media string, jobs int) []time.Time {
	out := make([]time.Time, jobs)
	err := filepath.WalkDir(media, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
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

// logTimeline logs, from the jobs' own timestamps, each job's
// submitted_at → started_at, started_at → its ffmpeg's end (about its
// ffmpeg run), its ffmpeg's end → finished_at, and for a
// job that took a freed slot, the previous ffmpeg's end and finished_at →
// its started_at.
func logTimeline(b *testing.B, jobs []*server.Job, exits []time.Time, slots int) {
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
	var wait, report, gap time.Duration
	for k, i := range starts {
		j := jobs[i]
		line := fmt.Sprintf("job %d: submitted->running %s, running->ffmpeg end %s, ffmpeg end->finished %s", i,
			ms(j.StartedAt.Sub(j.SubmittedAt)), ms(exits[i].Sub(j.StartedAt)), ms(j.FinishedAt.Sub(exits[i])))
		wait += j.StartedAt.Sub(j.SubmittedAt)
		report += j.FinishedAt.Sub(exits[i])
		if k >= slots {
			prev := ends[k-slots]
			line += fmt.Sprintf(", slot freed by job %d: its ffmpeg end->started %s, its finished->started %s",
				prev.i, ms(j.StartedAt.Sub(prev.exit)), ms(j.StartedAt.Sub(prev.fin)))
			gap += j.StartedAt.Sub(prev.exit)
		}
		b.Log(line)
	}
	b.ReportMetric(wait.Seconds()*1000/float64(len(jobs)), "submit-to-running-ms/job")
	b.ReportMetric(report.Seconds()*1000/float64(len(jobs)), "exit-to-finished-ms/job")
	if n := len(jobs) - slots; n > 0 {
		b.ReportMetric(gap.Seconds()*1000/float64(n), "exit-to-next-start-ms/slot")
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
