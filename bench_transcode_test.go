package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cli"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/worker"
)

// BenchmarkTranscodeThroughput runs the same batch of real transcodes
// twice in one run: directly (the ffmpeg commands the worker builds,
// started by hand, as many at once as the worker has slots) and through
// ffrtmp dev (submit, schedule, run, probe, report). It reports both
// throughputs and their ratio (platform / direct).
//
//	go test -run '^$' -bench TranscodeThroughput -benchtime 1x .
func BenchmarkTranscodeThroughput(b *testing.B) {
	const jobs, slots = 8, 2
	spec := fsm.JobSpec{Scenario: "720p30-h264", Input: fsm.Input{URL: "testsrc://?duration=6"},
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
	dir := b.TempDir()
	sem := make(chan struct{}, slots)
	var wg sync.WaitGroup
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
			if err := cmd.Run(); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	direct := time.Since(start)

	// Through the platform.
	root := b.TempDir()
	vars := map[string]string{"XDG_CONFIG_HOME": filepath.Join(root, "config"), "HOME": root}
	getenv := func(k string) string { return vars[k] }
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- cli.RunDev(ctx, cli.DevConfig{DataDir: filepath.Join(root, "data"), HTTPAddr: "127.0.0.1:0",
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
	var ids []string
	for i := range jobs {
		s := spec
		s.Outputs = []fsm.Output{{URL: fmt.Sprintf("file:///tp/%d.mp4", i)}}
		j, err := client.SubmitJob(ctx, &s)
		if err != nil {
			b.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	for _, id := range ids {
		if j := waitJobDone(b, client, id); j.State != fsm.JobSucceeded {
			b.Fatalf("job %s: %s %+v", id, j.State, j.Error)
		}
	}
	platform := time.Since(start)

	b.ReportMetric(float64(jobs)/direct.Seconds(), "direct-jobs/s")
	b.ReportMetric(float64(jobs)/platform.Seconds(), "platform-jobs/s")
	b.ReportMetric(direct.Seconds()/platform.Seconds(), "ratio")
	b.Logf("%d jobs, %d at a time: direct %s, through ffrtmp %s", jobs, slots, direct.Round(time.Millisecond), platform.Round(time.Millisecond))
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
