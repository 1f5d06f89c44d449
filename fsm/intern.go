package fsm

import "fmt"

// A queued job is the FSM's largest use of memory (docs/BENCHMARKS.md
// section 12), and a job decoded from a log entry or from the store holds
// its own copy of every string, even of those that can take only a few
// values (scenario, queue, priority, kinds, containers, codecs) or that repeat
// within the job (the plan's URLs are the spec's). compact points them at
// one shared copy. The values do not change, so neither does anything a
// reader, the store or a snapshot sees.

// vocabulary maps each string of the fixed sets a job's spec and plan
// draw from to one copy of it.
var vocabulary = func() map[string]string {
	m := map[string]string{}
	add := func(s string) { m[s] = s }
	for _, q := range Queues {
		add(string(q))
	}
	for _, p := range Priorities {
		add(string(p))
	}
	for _, k := range []string{KindTestsrc, KindFile, KindHTTP, KindRTMP, KindSRT} {
		add(k)
	}
	for _, c := range containers {
		add(c)
	}
	for c, codecs := range containerCodecs {
		add(c)
		for _, v := range codecs {
			add(v)
		}
	}
	for _, a := range []string{"aac", "opus"} {
		add(a)
	}
	for _, h := range append([]string{HardwareSoftware}, HardwareKinds...) {
		add(h)
	}
	for _, h := range heights {
		for _, r := range frameRates {
			for _, c := range videoCodecs {
				add(fmt.Sprintf("%dp%d-%s", h, r, c)) // the preset scenarios
			}
		}
	}
	return m
}()

// shared returns s's copy in vocabulary, or s.
func shared(s string) string {
	if v, ok := vocabulary[s]; ok {
		return v
	}
	return s
}

// compact makes j share the strings it can, with tenantID (an equal
// string the FSM keeps anyway) as its tenant. j must not be published
// yet, and its slices must not be shared with a published job: compact
// writes to them.
func compact(j *Job, tenantID string) {
	if j.TenantID == tenantID {
		j.TenantID = tenantID
	}
	s, p := &j.Spec, &j.Plan
	s.Scenario = shared(s.Scenario)
	s.Queue, s.Priority = Queue(shared(string(s.Queue))), Priority(shared(string(s.Priority)))
	s.Hardware, p.Hardware = shared(s.Hardware), shared(p.Hardware)
	p.Input.Kind = shared(p.Input.Kind)
	if p.Input.URL == s.Input.URL {
		p.Input.URL = s.Input.URL
	}
	for i := range p.Outputs {
		r := &p.Outputs[i]
		r.Kind, r.Container = shared(r.Kind), shared(r.Container)
		r.Video.Codec, r.Audio.Codec = shared(r.Video.Codec), shared(r.Audio.Codec)
		if i < len(s.Outputs) && r.URL == s.Outputs[i].URL {
			r.URL = s.Outputs[i].URL
		}
	}
}
