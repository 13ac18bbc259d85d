package conflicts

import (
	"strings"
	"testing"
)

func TestPerfOnlyEvents(t *testing.T) {
	got := perfOnlyEvents([]string{"cpu", "wall", "itimer", "ctimer", "alloc", "lock", "nativemem", "nativelock",
		"java.util.Properties.getProperty", "cycles", "cpu-clock", "page-faults", "sched:sched_switch", "mem:0x1000", "cpu/event=0x3c/", "r4d2"})
	want := []string{"cycles", "cpu-clock", "page-faults", "sched:sched_switch", "mem:0x1000", "cpu/event=0x3c/", "r4d2"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("perfOnlyEvents = %q, want %q", got, want)
	}
}
