package flightrec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/internal/testenv"
)

// TestLiveFlightRecorderDisabled: a JDK 17 JVM started with
// -XX:-FlightRecorder (which answers every JFR command "Flight Recorder
// is disabled.") is refused by jfr-disabled, as the safe door refuses:
// an *attach.RefusedError, nothing written, and nothing sent — no attach
// socket or trigger file, no SIGQUIT (the JVM prints no thread dump but
// the test's own).
func TestLiveFlightRecorderDisabled(t *testing.T) {
	t.Parallel()
	p := testenv.StartJVM(t, testenv.JVMSpec{JDK: testenv.JDK17(t), JVMArgs: []string{"-XX:-FlightRecorder"}})
	var out bytes.Buffer
	res, err := Profile(context.Background(), p.PID, Request{Duration: 1}, &out)
	var refused *attach.RefusedError
	if !errors.As(err, &refused) || !errors.Is(err, attach.ErrRefused) {
		t.Fatalf("want a refusal, got %v (%+v)", err, res)
	}
	if c := refused.Verdict.Causes(); !slices.Equal(c, []string{"jfr-disabled"}) || refused.PID != p.PID {
		t.Fatalf("refused by %v (pid %d), want jfr-disabled: %v", c, refused.PID, err)
	}
	if !strings.Contains(err.Error(), "-XX:-FlightRecorder") && !strings.Contains(err.Error(), "FlightRecorder=false") {
		t.Errorf("the refusal does not say why: %v", err)
	}
	if res != nil || out.Len() != 0 {
		t.Errorf("a refusal returned %+v and wrote %d bytes", res, out.Len())
	}
	for _, f := range []string{fmt.Sprintf("/tmp/.java_pid%d", p.PID), fmt.Sprintf("/tmp/.attach_pid%d", p.PID), filepath.Join(p.Dir, fmt.Sprintf(".attach_pid%d", p.PID))} {
		if _, err := os.Lstat(f); err == nil {
			t.Errorf("%s exists: something was sent to the target", f)
		}
	}
	if n := testenv.DumpingSIGQUITs(t, p); n != 0 {
		t.Errorf("the JVM printed %d thread dumps of its own: it was sent SIGQUIT", n)
	}
}

// TestLiveRecorderBusy: a safeattach recording already running in the
// JVM (another caller's) refuses a second as busy, before JFR.start, and
// leaves it running; a recording of another name runs beside a new one,
// which records and stops as usual.
func TestLiveRecorderBusy(t *testing.T) {
	t.Parallel()
	p := testenv.StartJVM(t, testenv.JVMSpec{JDK: testenv.JDK17(t), Workers: 1})
	ctx := context.Background()
	jcmd := func(cmd string) string {
		t.Helper()
		res, err := attach.Jcmd(ctx, p.PID, cmd, attach.Options{})
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		return res.Output
	}
	jcmd("JFR.start name=someone-else duration=60s")
	var out bytes.Buffer
	res, err := Profile(ctx, p.PID, Request{Duration: time.Second}, &out)
	if err != nil || res.Bytes == 0 || out.Len() == 0 {
		t.Fatalf("beside another recording: %v (%+v, %d bytes)", err, res, out.Len())
	}
	jcmd("JFR.start name=safeattach-0123456789abcdef duration=60s")
	_, err = Profile(ctx, p.PID, Request{Duration: time.Second}, &out)
	if !errors.Is(err, ErrRecorderBusy) || !errors.Is(err, attach.ErrProfilerBusy) || attach.OutcomeOf(err) != attach.OutcomeRefused {
		t.Fatalf("beside a safeattach recording: %v, want busy", err)
	}
	if check := jcmd("JFR.check"); !strings.Contains(check, "name=safeattach-0123456789abcdef") || strings.Count(check, "(running)") != 2 {
		t.Errorf("after the refusal, JFR.check says:\n%s", check)
	}
}
