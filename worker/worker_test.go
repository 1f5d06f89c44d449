package worker

import (
	"maps"
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
)

func TestEncoderSessions(t *testing.T) {
	w := New(Config{ID: "w", Slots: 3})
	cases := []struct {
		found []string
		want  map[string]int
	}{
		{[]string{"libx264", "libx265"}, nil},
		{[]string{"libx264", "h264_nvenc", "hevc_nvenc"}, map[string]int{fsm.HardwareNVENC: DefaultNVENCSessions}},
		{[]string{"h264_qsv", "hevc_vaapi"}, map[string]int{fsm.HardwareQSV: 3, fsm.HardwareVAAPI: 3}},
	}
	for _, tc := range cases {
		if got := w.sessions(tc.found); !maps.Equal(got, tc.want) {
			t.Errorf("sessions(%v) = %v, want %v", tc.found, got, tc.want)
		}
	}
	w.cfg.NVENCSessions = 32
	if got := w.sessions([]string{"h264_nvenc"}); got[fsm.HardwareNVENC] != 32 {
		t.Errorf("configured NVENC sessions: got %v", got)
	}
}
