package preflight

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestEnumsRoundTripAndReject: the named states marshal as their words
// and a report naming a state no code handles is rejected on input.
func TestEnumsRoundTripAndReject(t *testing.T) {
	r := Report{PID: 1, JVM: JVM{Kind: JVMHotSpot}, Process: Process{State: StateSleeping}}
	r.Jemalloc.Prof.State = ProfActive
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"kind":"hotspot"`, `"state":"sleeping"`, `"state":"active"`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("%s missing from %s", want, data)
		}
	}
	var back Report
	if err := json.Unmarshal(data, &back); err != nil || back.JVM.Kind != JVMHotSpot || back.Jemalloc.Prof.State != ProfActive {
		t.Fatalf("round trip: %v %+v", err, back.JVM)
	}
	bad := strings.Replace(string(data), `"kind":"hotspot"`, `"kind":"graalish"`, 1)
	if err := json.Unmarshal([]byte(bad), &back); err == nil || !strings.Contains(err.Error(), "JVM kind") {
		t.Errorf("unknown JVM kind accepted: %v", err)
	}
	var a Agent
	if err := json.Unmarshal([]byte(`{"kind":"profiler-ish"}`), &a); err == nil {
		t.Error("unknown agent kind accepted")
	}
}

func TestFileModeIsOctalText(t *testing.T) {
	a := Agent{Mode: 0o755}
	data, _ := json.Marshal(a)
	if !strings.Contains(string(data), `"mode":"0755"`) {
		t.Errorf("%s", data)
	}
	var back Agent
	if err := json.Unmarshal(data, &back); err != nil || back.Mode != 0o755 {
		t.Errorf("%v %o", err, back.Mode)
	}
	if err := json.Unmarshal([]byte(`{"mode":"999"}`), &back); err == nil {
		t.Error("a non-octal mode was accepted")
	}
}
