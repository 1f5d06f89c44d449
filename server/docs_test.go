package server_test

import (
	"context"
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/ffrtmp/ffrtmp/server"
)

var screenshot = flag.String("screenshot", "", "TestDocsPageInChromium writes PNGs of /v1/docs to this path: the top of the page, "+
	"and beside it (name-submit.png) the submitJob operation after its \"Try it out\"")

// chromium returns the path of a Chromium to drive. Without one the test
// is skipped, except in CI (CI=true), where .ci/run installs it and its
// absence is a failure.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatal("chromium is not installed (.ci/run installs Debian's chromium)")
	}
	t.Skip("chromium is not installed (apt-get install chromium)")
	return ""
}

// operation is an operation of the OpenAPI document, or one that the page
// lists.
type operation struct {
	ID         string `json:"id"`
	Deprecated bool   `json:"deprecated"`
}

// operationIDs returns the sorted IDs of ops, and of those deprecated.
func operationIDs(ops []operation) (all, deprecated []string) {
	for _, op := range ops {
		all = append(all, op.ID)
		if op.Deprecated {
			deprecated = append(deprecated, op.ID)
		}
	}
	slices.Sort(all)
	slices.Sort(deprecated)
	return all, deprecated
}

// TestDocsPageInChromium opens /v1/docs of a real node in a headless
// Chromium with no other network: the page loads the live OpenAPI
// document and lists every operation, the deprecated ones marked; then,
// authorized with an API key, "Try it out" on submitJob submits a job,
// which the API then serves. The page logs no error and no
// Content-Security-Policy violation, and requests nothing but the node.
func TestDocsPageInChromium(t *testing.T) {
	t.Parallel()
	bin := chromium(t)
	e := setup(t, envOpts{})

	var doc struct {
		Paths map[string]map[string]struct {
			OperationID string `json:"operationId"`
			Deprecated  bool   `json:"deprecated"`
		} `json:"paths"`
	}
	e.doKey("", "GET", "/v1/openapi.json", nil, &doc)
	var documented []operation
	for _, ops := range doc.Paths {
		for _, op := range ops {
			documented = append(documented, operation{op.OperationID, op.Deprecated})
		}
	}
	wantOps, wantDeprecated := operationIDs(documented)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ctx, cancel = chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(bin), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 1600))
	defer cancel()
	ctx, cancel = chromedp.NewContext(ctx, chromedp.WithLogf(t.Logf))
	defer cancel()
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start %s: %v", bin, err)
	}

	// Everything the page writes to the console, and the browser's own
	// log (a refused script or style, a failed request); every request it
	// makes.
	var (
		mu       sync.Mutex
		problems []string
		requests []string
	)
	if err := chromedp.Listen(ctx, func(ev any) {
		if ev, ok := ev.(*network.EventRequestWillBeSent); ok {
			mu.Lock()
			requests = append(requests, ev.Request.Method+" "+ev.Request.URL)
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	consoleCtx, stopConsole := context.WithCancel(ctx)
	consoleDone := make(chan struct{})
	messages := chromedp.Console(consoleCtx)
	go func() {
		defer close(consoleDone)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleException || m.Type == chromedp.ConsoleWarning {
				mu.Lock()
				problems = append(problems, string(m.Type)+" "+m.Source+": "+m.Text+" ("+m.URL+")")
				mu.Unlock()
			}
		}
	}()

	if err := chromedp.Do(ctx, chromedp.Navigate(e.url+"/v1/docs"), chromedp.WaitVisible(chromedp.CSS(".opblock"))); err != nil {
		t.Fatalf("open /v1/docs: %v", err)
	}
	listed, err := chromedp.Run(ctx, chromedp.Evaluate[[]operation](`Array.from(document.querySelectorAll(".opblock")).map(b => ({
		id: b.querySelector(".opblock-summary-operation-id")?.textContent ?? "",
		deprecated: b.classList.contains("opblock-deprecated"),
	}))`))
	if err != nil {
		t.Fatal(err)
	}
	gotOps, gotDeprecated := operationIDs(listed)
	if !slices.Equal(gotOps, wantOps) {
		t.Errorf("the page lists %d operations %v,\nthe document has %d: %v", len(gotOps), gotOps, len(wantOps), wantOps)
	}
	if !slices.Equal(gotDeprecated, wantDeprecated) || len(wantDeprecated) == 0 {
		t.Errorf("the page marks %v deprecated, want %v", gotDeprecated, wantDeprecated)
	}

	// Authorize with an API key, then "Try it out" on submitJob.
	const op = `[id$="-submitJob"]`
	spec := `{"name":"from-swagger-ui","scenario":"720p30-h264","input":{"url":"testsrc://?duration=5"},"outputs":[{"url":"file:///docs.mp4"}]}`
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(".auth-wrapper .authorize")),
		chromedp.SendKeys(chromedp.CSS(".modal-ux input"), e.token),
		chromedp.Click(chromedp.CSS(".modal-ux .auth-btn-wrapper .authorize")),
		chromedp.Click(chromedp.CSS(".modal-ux .btn-done")),
		chromedp.WaitNotPresent(chromedp.CSS(".modal-ux")),
		chromedp.Click(chromedp.CSS(op+" .opblock-summary-control")),
		chromedp.Click(chromedp.CSS(op+" .try-out__btn")),
		// Replace the example body as a user pastes one: select all,
		// insert the text (typing it key by key re-renders the page per
		// key, a minute on a loaded machine).
		chromedp.Focus(chromedp.CSS(op+" textarea.body-param__text")),
		chromedp.KeyEvent("a", chromedp.KeyModifiers(chromedp.ModifierCtrl)),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, input.InsertText, input.InsertTextParams{Text: spec})
			return err
		}),
		chromedp.Click(chromedp.CSS(op+" .execute")),
	); err != nil {
		t.Fatalf("try it out: %v", err)
	}
	type answer struct {
		Status string `json:"status"`
		Body   string `json:"body"`
	}
	got, err := chromedp.Run(ctx, chromedp.Poll[answer](`(() => {
		const t = document.querySelector('`+op+` .live-responses-table .response');
		return t && {status: t.querySelector(".response-col_status").textContent.trim(),
			body: t.querySelector(".response-col_description pre").textContent};
	})()`, chromedp.WithPollingTimeout(time.Minute)))
	if err != nil {
		t.Fatalf("no answer on the page: %v", err)
	}
	if *screenshot != "" {
		writeScreenshots(t, ctx, *screenshot, op)
	}
	var job server.Job
	if err := json.Unmarshal([]byte(got.Body), &job); got.Status != "201" || err != nil {
		t.Fatalf("try it out answered %s %s (%v), want 201 and a job", got.Status, got.Body, err)
	}
	var stored server.Job
	if resp := e.do("GET", "/v1/jobs/"+job.ID, nil, &stored); resp.StatusCode != http.StatusOK || stored.Spec.Name != "from-swagger-ui" {
		t.Errorf("GET /v1/jobs/%s: %d %+v, want the job submitted from the page", job.ID, resp.StatusCode, stored)
	}

	stopConsole()
	<-consoleDone
	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Errorf("the page logged: %s", p)
	}
	// Nothing but the node: no CDN, no validator, no font service.
	for _, r := range requests {
		_, u, _ := strings.Cut(r, " ")
		if !strings.HasPrefix(u, e.url+"/") && !strings.HasPrefix(u, "data:") {
			t.Errorf("the page requested %s, which is not on the node", r)
		}
	}
	for _, want := range []string{"GET " + e.url + "/v1/docs/swagger-ui-bundle.js", "GET " + e.url + "/v1/openapi.json", "POST " + e.url + "/v1/jobs"} {
		if !slices.Contains(requests, want) {
			t.Errorf("the page did not request %s; it requested %v", want, requests)
		}
	}
}

// writeScreenshots writes the top of the page to path, and the operation
// that sel finds to path with "-submit" before its extension.
func writeScreenshots(t *testing.T, ctx context.Context, path, sel string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`)); err != nil {
		t.Fatal(err)
	}
	top, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	op, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS(sel)))
	if err != nil {
		t.Fatal(err)
	}
	ext := filepath.Ext(path)
	for p, png := range map[string][]byte{path: top, strings.TrimSuffix(path, ext) + "-submit" + ext: op} {
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", p)
	}
}
