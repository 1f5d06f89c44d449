package cluster

import "testing"

func TestIsLoopback(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:7071", true},
		{"127.0.0.4:7071", true},
		{"[::1]:7071", true},
		{"localhost:7071", true},
		{"192.0.2.11:7071", false},
		{"node1.example.com:7071", false},
		{"no-port", false},
	} {
		if got := isLoopback(tc.addr); got != tc.want {
			t.Errorf("isLoopback(%q) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}
