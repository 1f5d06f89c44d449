package fsm_test

import (
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
)

func TestPolicyCIDR(t *testing.T) {
	t.Parallel()
	pol := fsm.Policy{AllowedHosts: []string{"10.20.0.0/16", "2001:db8::/32"}}
	if err := fsm.ValidatePolicy(pol); err != nil {
		t.Fatalf("ValidatePolicy: %v", err)
	}
	tests := []struct {
		input string
		code  fsm.Code
	}{
		{"http://10.20.3.4/a.mp4", ""},
		{"rtmp://10.20.255.255:1936/live/key", ""},
		{"http://[2001:db8::7]:8080/a.mp4", ""},
		{"http://10.21.0.1/a.mp4", fsm.CodeURLNotAllowed},
		{"http://[::ffff:10.21.0.1]/a.mp4", fsm.CodeURLNotAllowed},
		// A prefix matches URLs that name an IP, never names.
		{"http://media.10.20.0.0/a.mp4", fsm.CodeURLNotAllowed},
		{"http://169.254.169.254/a.mp4", fsm.CodeURLNotAllowed},
	}
	for _, tt := range tests {
		s := fsm.JobSpec{Scenario: "240p30-h264", Input: fsm.Input{URL: tt.input}, Outputs: []fsm.Output{{URL: "file:///a.mp4"}}}
		if _, err := s.Compile(pol); fsm.ErrorCode(err) != tt.code {
			t.Errorf("Compile(%s) = %v, want code %q", tt.input, err, tt.code)
		}
	}
	for _, h := range []string{"10.20.0.0/33", "10.20.0.0/16/1", "example.com/16", "fe80::%eth0/64"} {
		if err := fsm.ValidatePolicy(fsm.Policy{AllowedHosts: []string{h}}); err == nil {
			t.Errorf("ValidatePolicy(%q): got nil, want an error", h)
		}
	}
}
