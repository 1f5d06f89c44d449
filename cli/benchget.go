package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ffrtmp/ffrtmp/fsm"
)

func benchGetCommand() *cli.Command {
	return &cli.Command{
		Name: "get",
		Usage: "GET /v1/jobs/{id} throughput and latency, linearizable (the default) against stale (?stale=true) " +
			"in the same run; give the followers' addresses to measure reads through followers",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "requests", Value: 20000, Usage: "requests per mode and round"},
			&cli.IntFlag{Name: "concurrency", Value: 64, Usage: "concurrent clients"},
			&cli.IntFlag{Name: "rounds", Value: 2, Usage: "rounds; each measures stale, then linearizable"},
		},
		Action: func(c *cli.Context) error {
			client, out, err := clientAndOutput(c)
			if err != nil {
				return err
			}
			return BenchGet(c.Context, client, out.W, c.Int("requests"), c.Int("concurrency"), c.Int("rounds"))
		},
	}
}

// BenchGet measures reads of one job through the client's nodes (round
// robin): per round, n stale reads then n linearizable ones from conc
// clients, so that both modes share the machine's state; it reports each
// mode over all rounds and the ratio of their throughputs. A response not
// labelled with the mode asked for is an error. The job is canceled at
// the end.
func BenchGet(ctx context.Context, c *Client, w io.Writer, n, conc, rounds int) error {
	if n < 1 || conc < 1 || rounds < 1 {
		return fmt.Errorf("--requests, --concurrency and --rounds must be positive")
	}
	c.http.Transport = &http.Transport{MaxIdleConnsPerHost: conc}
	j, err := c.SubmitJob(ctx, &fsm.JobSpec{
		Name: "bench-get", Scenario: "240p30-h264", Queue: fsm.QueueBatch, Priority: fsm.PriorityLow,
		Input: fsm.Input{URL: "testsrc://?duration=1"}, Outputs: []fsm.Output{{URL: "file:///bench/get.mp4"}},
	})
	if err != nil {
		return fmt.Errorf("submit: %w", err)
	}
	defer c.JobAction(context.WithoutCancel(ctx), j.ID, "cancel")
	read := func(stale bool) func(i int) error {
		var q url.Values
		want := "linearizable"
		if stale {
			q, want = url.Values{"stale": {"true"}}, "stale"
		}
		return func(i int) error {
			resp, err := c.Rotated(i).request(ctx, "GET", "/v1/jobs/"+j.ID, q, nil)
			if err != nil {
				return err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if got := resp.Header.Get("X-Ffrtmp-Consistency"); got != want {
				return fmt.Errorf("asked for a %s read, answered %q", want, got)
			}
			return nil
		}
	}
	var lat [2][]time.Duration // stale, linearizable
	var elapsed [2]time.Duration
	for range rounds {
		for m, stale := range []bool{true, false} {
			l, d, err := readLoop(ctx, n, conc, read(stale))
			if err != nil {
				return err
			}
			lat[m] = append(lat[m], l...)
			elapsed[m] += d
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "read\tn\tconcurrency\tops/s\tp50\tp99\tmax\n")
	var rate [2]float64
	for m, name := range []string{"GET ?stale=true (baseline)", "GET linearizable (default)"} {
		l := lat[m]
		slices.Sort(l)
		q := func(p float64) time.Duration { return l[min(len(l)-1, int(p*float64(len(l))))].Round(time.Microsecond) }
		rate[m] = float64(len(l)) / elapsed[m].Seconds()
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%s\t%s\t%s\n", name, len(l), conc, rate[m], q(0.50), q(0.99), q(1))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "linearizable/stale throughput: %.2f\n", rate[1]/rate[0])
	return err
}

// readLoop runs op n times (i = 0…n-1) from conc goroutines, a closed
// loop, and returns each call's latency and the wall time; it stops at
// the first error.
func readLoop(ctx context.Context, n, conc int, op func(i int) error) ([]time.Duration, time.Duration, error) {
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				if err := op(i); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	return lat, time.Since(start), firstErr
}
