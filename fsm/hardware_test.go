package fsm_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

func TestCompileHardware(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		hardware string
		scenario string
		ladder   string // codec of a second rendition, if any
		wantCode fsm.Code
	}{
		{hardware: "", scenario: "720p30-h264"},
		{hardware: "software", scenario: "720p30-vp9"},
		{hardware: "nvenc", scenario: "720p30-h264", ladder: "h265"},
		{hardware: "qsv", scenario: "720p30-vp9"},
		{hardware: "vaapi", scenario: "2160p60-h265"},
		{hardware: "nvenc", scenario: "480p30-av1"},
		{hardware: "nvenc", scenario: "720p30-vp9", wantCode: fsm.CodeInvalidArgument},
		{hardware: "nvenc", scenario: "720p30-h264", ladder: "vp9", wantCode: fsm.CodeInvalidArgument},
		{hardware: "NVENC", scenario: "720p30-h264", wantCode: fsm.CodeInvalidArgument},
		{hardware: "cuda", scenario: "720p30-h264", wantCode: fsm.CodeInvalidArgument},
		{hardware: "any", scenario: "720p30-h264", wantCode: fsm.CodeInvalidArgument},
	} {
		name := fmt.Sprintf("%q/%s/%s", tt.hardware, tt.scenario, tt.ladder)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := spec(tt.scenario)
			s.Hardware = tt.hardware
			if tt.ladder != "" {
				s.Outputs = append(s.Outputs, fsm.Output{URL: "file:///low.mkv", Video: &fsm.VideoParams{Codec: tt.ladder, Height: 360}})
			}
			plan, err := s.Compile(fsm.Policy{})
			if tt.wantCode != "" {
				wantCode(t, err, tt.wantCode)
				return
			}
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			if plan.Hardware != tt.hardware {
				t.Errorf("plan hardware = %q, want %q", plan.Hardware, tt.hardware)
			}
		})
	}
}

func TestEncoderFor(t *testing.T) {
	t.Parallel()
	all := []string{"libx264", "h264_nvenc", "h264_qsv", "libx265", "hevc_nvenc", "hevc_vaapi", "vp9_qsv", "av1_nvenc"}
	nvencOnly := fsm.Worker{Encoders: all, EncoderSessions: map[string]int{"nvenc": 4}}
	everything := fsm.Worker{Encoders: all, EncoderSessions: map[string]int{"nvenc": 4, "qsv": 2, "vaapi": 1}}
	noSessions := fsm.Worker{Encoders: all}
	gpuOnly := fsm.Worker{Encoders: []string{"h264_nvenc", "hevc_nvenc"}, EncoderSessions: map[string]int{"nvenc": 2, "qsv": 9}}
	for _, tt := range []struct {
		name     string
		w        fsm.Worker
		codec    string
		hardware string
		want     string
	}{
		{"any prefers software", everything, "h264", "", "libx264"},
		{"any falls back to hardware", everything, "vp9", "", "vp9_qsv"},
		{"any falls back in EncodersFor order", gpuOnly, "h265", "", "hevc_nvenc"},
		{"software only", everything, "h264", "software", "libx264"},
		{"no software encoder", gpuOnly, "h264", "software", ""},
		{"nvenc", everything, "h264", "nvenc", "h264_nvenc"},
		{"h265 is hevc", everything, "h265", "vaapi", "hevc_vaapi"},
		{"qsv", everything, "vp9", "qsv", "vp9_qsv"},
		{"no such encoder", everything, "h265", "qsv", ""},
		{"kind without sessions", nvencOnly, "h264", "qsv", ""},
		{"encoders without sessions", noSessions, "h264", "nvenc", ""},
		{"any skips kinds without sessions", nvencOnly, "vp9", "", ""},
		{"sessions without encoders", gpuOnly, "h264", "qsv", ""},
		{"unknown codec", everything, "mpeg2", "", ""},
	} {
		if got := tt.w.EncoderFor(tt.codec, tt.hardware); got != tt.want {
			t.Errorf("%s: EncoderFor(%q, %q) = %q, want %q", tt.name, tt.codec, tt.hardware, got, tt.want)
		}
	}
	for enc, want := range map[string]string{"libx264": "", "h264_nvenc": "nvenc", "hevc_qsv": "qsv", "av1_vaapi": "vaapi", "libaom-av1": "", "nvenc": ""} {
		if got := fsm.EncoderHardware(enc); got != want {
			t.Errorf("EncoderHardware(%q) = %q, want %q", enc, got, want)
		}
	}
	// Every hardware encoder EncodersFor names is <codec>_<kind>.
	for _, c := range []string{"h264", "h265", "vp9", "av1"} {
		for _, e := range fsm.EncodersFor(c) {
			if k := fsm.EncoderHardware(e); k != "" && !slices.Contains(fsm.HardwareKinds, k) {
				t.Errorf("encoder %s has unknown kind %q", e, k)
			}
		}
	}
}

// hwSpec returns a spec requiring hardware with one rendition per codec.
func hwSpec(hardware string, codecs ...string) fsm.JobSpec {
	s := spec("720p30-" + codecs[0])
	s.Hardware = hardware
	s.AcquireTimeout = fsm.Duration(time.Minute)
	for i, c := range codecs[1:] {
		s.Outputs = append(s.Outputs, fsm.Output{URL: fmt.Sprintf("file:///out-%d.mkv", i), Video: &fsm.VideoParams{Codec: c, Height: 360}})
	}
	return s
}

func assignedTo(d *fsm.Decisions) []string {
	var out []string
	for _, a := range d.Assign {
		out = append(out, a.JobID+"→"+a.WorkerID)
	}
	return out
}

// TestScheduleEncoderSessions: hardware encoder sessions are counted
// capacity, one per rendition, alongside slots.
func TestScheduleEncoderSessions(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.worker(fsm.Worker{ID: "gpu", Slots: 8, Encoders: []string{"libx264", "h264_nvenc", "hevc_nvenc"}, EncoderSessions: map[string]int{"nvenc": 3}})
	n.submit("ladder", "t1", hwSpec("nvenc", "h264", "h265"), at(0)) // two sessions
	n.submit("one", "t1", hwSpec("nvenc", "h264"), at(time.Second))
	n.submit("two", "t1", hwSpec("nvenc", "h264"), at(2*time.Second))
	n.submit("sw", "t1", hwSpec("", "h264"), at(3*time.Second))
	n.submit("sw2", "t1", hwSpec("software", "h264"), at(4*time.Second))

	d := n.schedule(at(10 * time.Second))
	if got, want := assignedTo(d), []string{"ladder→gpu", "one→gpu", "sw→gpu", "sw2→gpu"}; !slices.Equal(got, want) {
		t.Fatalf("assignments = %v, want %v (three nvenc sessions; software jobs take none)", got, want)
	}
	for _, a := range d.Assign {
		n.job(a)
	}
	n.refused(&fsm.AssignJob{JobID: "two", WorkerID: "gpu", Attempt: 1, At: at(10 * time.Second)}, fsm.CodeInvalidTransition)
	if d := n.schedule(at(20 * time.Second)); len(d.Assign) != 0 {
		t.Fatalf("assigned %v with every nvenc session held", assignedTo(d))
	}
	// A finished software job frees no session.
	n.job(&fsm.FinishJob{Report: report(t, n.get("sw")), At: at(21 * time.Second)})
	if d := n.schedule(at(21 * time.Second)); len(d.Assign) != 0 {
		t.Fatalf("assigned %v after a software job ended", assignedTo(d))
	}
	// A finished one-rendition nvenc job frees one.
	n.job(&fsm.FinishJob{Report: report(t, n.get("one")), At: at(22 * time.Second)})
	if got, want := assignedTo(n.schedule(at(22*time.Second))), []string{"two→gpu"}; !slices.Equal(got, want) {
		t.Errorf("after one ended: assignments %v, want %v", got, want)
	}
}

// TestScheduleHardwareCapability: which workers may ever run a job, by
// its hardware requirement, and no_capable_worker when none may.
func TestScheduleHardwareCapability(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.worker(fsm.Worker{ID: "cpu", Slots: 4, Encoders: []string{"libx264", "libx265"}})
	n.worker(fsm.Worker{ID: "nv", Slots: 4, Encoders: []string{"h264_nvenc", "hevc_nvenc"}, EncoderSessions: map[string]int{"nvenc": 2}})
	n.worker(fsm.Worker{ID: "nv-unprobed", Slots: 4, Encoders: []string{"h264_nvenc", "hevc_nvenc"}})
	n.submit("qsv", "t1", hwSpec("qsv", "h264"), at(0))
	n.submit("wide", "t1", hwSpec("nvenc", "h264", "h264", "h265"), at(time.Second)) // three sessions, two offered
	n.submit("nvenc", "t1", hwSpec("nvenc", "h265"), at(2*time.Second))
	n.submit("software", "t1", hwSpec("software", "h264"), at(3*time.Second))
	n.submit("any", "t1", hwSpec("", "h265"), at(4*time.Second))

	d := n.schedule(at(10 * time.Second))
	if got, want := assignedTo(d), []string{"nvenc→nv", "software→cpu", "any→cpu"}; !slices.Equal(got, want) {
		t.Fatalf("assignments = %v, want %v", got, want)
	}
	n.refused(&fsm.AssignJob{JobID: "qsv", WorkerID: "nv", Attempt: 1, At: at(10 * time.Second)}, fsm.CodeInvalidTransition)
	n.refused(&fsm.AssignJob{JobID: "wide", WorkerID: "nv", Attempt: 1, At: at(10 * time.Second)}, fsm.CodeInvalidTransition)
	n.refused(&fsm.AssignJob{JobID: "nvenc", WorkerID: "nv-unprobed", Attempt: 1, At: at(10 * time.Second)}, fsm.CodeInvalidTransition)
	n.refused(&fsm.AssignJob{JobID: "nvenc", WorkerID: "cpu", Attempt: 1, At: at(10 * time.Second)}, fsm.CodeInvalidTransition)
	n.refused(&fsm.AssignJob{JobID: "software", WorkerID: "nv", Attempt: 1, At: at(10 * time.Second)}, fsm.CodeInvalidTransition)
	for _, a := range d.Assign {
		n.job(a)
	}

	// The busy nv worker does not make the others incapable: only qsv
	// (nobody has it) and wide (more sessions than anyone offers) expire
	// with no_capable_worker.
	deadline := at(time.Minute)
	d = n.schedule(deadline.Add(4 * time.Second))
	var got []string
	for _, e := range d.Expire {
		got = append(got, e.JobID+":"+string(e.Code))
	}
	if want := []string{"qsv:no_capable_worker", "wide:no_capable_worker"}; !slices.Equal(got, want) {
		t.Fatalf("expirations = %v, want %v", got, want)
	}
	j := n.job(d.Expire[0])
	if j.State != fsm.JobFailed || j.Error == nil || !strings.Contains(j.Error.Message, "hardware qsv") {
		t.Errorf("expired job: state %s error %+v, want failed saying it needs hardware qsv", j.State, j.Error)
	}
}

// TestScheduleAnyHardwareHoldsSessions: a job that takes any encoder holds
// a session on a worker that would encode it in hardware, and none where
// a software encoder exists.
func TestScheduleAnyHardwareHoldsSessions(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.worker(fsm.Worker{ID: "nv", Slots: 4, Encoders: []string{"libx264", "hevc_nvenc"}, EncoderSessions: map[string]int{"nvenc": 1}})
	n.submit("h265-a", "t1", hwSpec("", "h265"), at(0))
	n.submit("h265-b", "t1", hwSpec("", "h265"), at(time.Second))
	n.submit("h264", "t1", hwSpec("", "h264"), at(2*time.Second))
	d := n.schedule(at(10 * time.Second))
	if got, want := assignedTo(d), []string{"h265-a→nv", "h264→nv"}; !slices.Equal(got, want) {
		t.Fatalf("assignments = %v, want %v (one nvenc session; h264 encodes in software)", got, want)
	}
}
