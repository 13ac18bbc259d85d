package fleet

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/kube"
	"github.com/safeattach/safeattach/profiling"
)

// cut is what kube keeps of a longer annotation value: its first 1,024
// bytes (kube's maxAnnotationValue).
func cut(s string) string { return s[:min(len(s), 1024)] }

// Reasons, as refusals give them.
const (
	empty     = "empty"
	tooLong   = "longer than"
	controls  = "control or invisible characters, or not UTF-8"
	badChars  = "characters or a first character it may not have"
	notDur    = "not a duration"
	tooShort  = "too short"
	tooLongW  = "too long"
	noRefusal = ""
)

// short is a value as a failure shows it: quoted, cut at 60 bytes.
func short(s string) string {
	if len(s) > 60 {
		return fmt.Sprintf("%q… (%d bytes)", s[:60], len(s))
	}
	return fmt.Sprintf("%q", s)
}

func checkRefusal(t *testing.T, annotation, value string, r *annotationRefusal, reason string) {
	t.Helper()
	switch {
	case reason == noRefusal && r != nil:
		t.Errorf("%s refused (%s), want it used", short(value), r.reason)
	case reason == noRefusal:
	case r == nil:
		t.Errorf("%s used, want it refused: %s", short(value), reason)
	case r.annotation != annotation || r.value != value || !strings.HasPrefix(r.reason, reason) || r.want == "":
		t.Errorf("%s: refusal %s %q %q, want annotation %s, reason %q", short(value), r.annotation, r.reason, r.want, annotation, reason)
	}
}

// TestEventAnnotation: an async-profiler event name, tracepoint or Java
// method is used; anything that could add options to the agent's
// command (",", "=") or reach a log or terminal raw is refused, with
// the reason, and the default used instead.
func TestEventAnnotation(t *testing.T) {
	const def = "cpu"
	for _, c := range []struct {
		value  string
		reason string
	}{
		{"itimer", noRefusal},
		{"wall", noRefusal},
		{"page-faults", noRefusal},
		{"sched:sched_switch", noRefusal},
		{"java.util.Properties.getProperty", noRefusal},
		{"Outer$Inner.method", noRefusal},
		{"_private", noRefusal},
		{"E", noRefusal},
		{"a" + strings.Repeat("b", 127), noRefusal}, // 128: the limit
		{"", empty},
		{"a" + strings.Repeat("b", 128), tooLong},
		{cut("a" + strings.Repeat("b", 5000)), tooLong}, // as kube keeps it
		{"wall,interval=1", badChars},
		{"wall,file=/etc/passwd", badChars},
		{"cpu=1", badChars},
		{"cpu interval", badChars},
		{" cpu", badChars},
		{"1cpu", badChars},
		{"-cpu", badChars},
		{".cpu", badChars},
		{"$cpu", badChars},
		{"cpu/x", badChars},
		{"cpu{x}", badChars},
		{"cpü", badChars},
		{"cpu\n", controls},
		{"cpu\x00", controls},
		{"cpu\x1b[2J", controls},
		{"cpu\u009b2J", controls},
		{"cpu\x7f", controls},
		{"cpu\xff", controls},
		{"cpu\u202e", controls}, // a bidi override
		{"wall,interval=1,jstackdepth=4096,file=/etc/passwd\u009b2J", controls},
	} {
		got, r := eventAnnotation(map[string]string{AnnotationEvent: c.value}, def)
		checkRefusal(t, AnnotationEvent, c.value, r, c.reason)
		if want := map[bool]string{true: c.value, false: def}[c.reason == noRefusal]; got != want {
			t.Errorf("%s: event %s, want %s", short(c.value), short(got), short(want))
		}
	}
	for _, ann := range []map[string]string{nil, {}, {AnnotationEnabled: "true", AnnotationService: "x"}} {
		if got, r := eventAnnotation(ann, def); got != def || r != nil {
			t.Errorf("no event annotation in %v: %q, %+v", ann, got, r)
		}
	}
}

// TestWindowAnnotation: a Go duration from MinWindow to MaxWindow is
// used, both limits included; anything else is refused with the reason.
func TestWindowAnnotation(t *testing.T) {
	const def = time.Minute
	for _, c := range []struct {
		value  string
		want   time.Duration
		reason string
	}{
		{"1s", time.Second, noRefusal}, // MinWindow
		{"10m", 10 * time.Minute, noRefusal},
		{"10m0s", 10 * time.Minute, noRefusal}, // MaxWindow, as Go prints it
		{"600s", 10 * time.Minute, noRefusal},
		{"90s", 90 * time.Second, noRefusal},
		{"1m30s", 90 * time.Second, noRefusal},
		{"1000ms", time.Second, noRefusal},
		{"1.5s", 1500 * time.Millisecond, noRefusal},
		{"999ms", def, tooShort},
		{"0s", def, tooShort},
		{"0", def, tooShort},
		{"-1m", def, tooShort},
		{"10m1s", def, tooLongW},
		{"600001ms", def, tooLongW},
		{"1h", def, tooLongW},
		{"", def, notDur},
		{"60", def, notDur},
		{"1 m", def, notDur},
		{" 1m", def, notDur},
		{"1m ", def, notDur},
		{"1min", def, notDur},
		{"one minute", def, notDur},
		{"1e3s", def, notDur},
		{"99999999999999999999s", def, notDur}, // overflows
		{"1m\n", def, notDur},
		{"1m\x00", def, notDur},
		{"1m\u009b", def, notDur},
		// Padding that a cut could turn valid: refused whole or cut.
		{strings.Repeat("0", 29) + "20s", 20 * time.Second, noRefusal}, // 32 bytes: the limit
		{strings.Repeat("0", 30) + "20s", def, tooLong},
		{cut(strings.Repeat("0", 1021) + "20s" + "h"), def, tooLong},
	} {
		got, r := windowAnnotation(map[string]string{AnnotationWindow: c.value}, def)
		checkRefusal(t, AnnotationWindow, c.value, r, c.reason)
		if got != c.want {
			t.Errorf("%s: window %v, want %v", short(c.value), got, c.want)
		}
	}
	if got, r := windowAnnotation(map[string]string{AnnotationEvent: "wall"}, def); got != def || r != nil {
		t.Errorf("no window annotation: %v, %+v", got, r)
	}
}

// TestServiceAnnotation: a Pyroscope application name is used; one with
// label syntax ("{", "}", ",", "=") or anything a log or terminal would
// obey is refused with the reason; absent or empty, it is
// <namespace>/<container>.
func TestServiceAnnotation(t *testing.T) {
	pod := func(service string, set bool) kube.Pod {
		p := kube.Pod{Namespace: "shop", Name: "orders", Annotations: map[string]string{AnnotationEnabled: "true"}}
		if set {
			p.Annotations[AnnotationService] = service
		}
		return p
	}
	const def = "shop/app"
	for _, c := range []struct {
		value  string
		reason string
	}{
		{"orders", noRefusal},
		{"shop/orders", noRefusal},
		{"eu-1.shop:orders_v2", noRefusal},
		{"_internal", noRefusal},
		{"0day", noRefusal},
		{"s" + strings.Repeat("x", 127), noRefusal}, // 128: the limit
		{"s" + strings.Repeat("x", 128), tooLong},
		{cut("s" + strings.Repeat("x", 5000)), tooLong},
		{"svc{tenant=other}", badChars},
		{"svc,tenant=other", badChars},
		{"svc}", badChars},
		{"a b", badChars},
		{"/shop", badChars},
		{".shop", badChars},
		{"-shop", badChars},
		{":shop", badChars},
		{"dienst-ü", badChars},
		{"svc\n", controls},
		{"svc\x1b]52;c;aGk=\x07", controls},
		{"svc\u009b2J", controls},
		{"svc\x7f", controls},
		{"svc\xff", controls},
		{"svc{tenant=other}" + hostileText, controls},
	} {
		got, r := serviceAnnotation(pod(c.value, true), "app")
		checkRefusal(t, AnnotationService, c.value, r, c.reason)
		if want := map[bool]string{true: c.value, false: def}[c.reason == noRefusal]; got != want {
			t.Errorf("%s: service %s, want %s", short(c.value), short(got), short(want))
		}
	}
	for _, set := range []bool{false, true} {
		if got, r := serviceAnnotation(pod("", set), "app"); got != def || r != nil {
			t.Errorf("empty service annotation (set %v): %q, %+v", set, got, r)
		}
	}
}

// TestFallbackAnnotation: a pod chooses the engine for a refused JVM
// (jfr) or none; anything else is refused, with the daemon's default
// used instead.
func TestFallbackAnnotation(t *testing.T) {
	const notEngine = "not an engine"
	for _, def := range []profiling.Engine{"", profiling.FlightRecorder} {
		for _, c := range []struct {
			value  string
			want   profiling.Engine
			reason string
		}{
			{"jfr", profiling.FlightRecorder, noRefusal},
			{"none", "", noRefusal},
			{"JFR", def, notEngine},
			{"async-profiler", def, notEngine},
			{"jfr,settings=/etc/passwd", def, notEngine},
			{"", def, notEngine},
			{"jfr\u009b2J", def, controls},
			{"jfr\xff", def, controls},
		} {
			got, r := fallbackAnnotation(map[string]string{AnnotationFallback: c.value}, def)
			checkRefusal(t, AnnotationFallback, c.value, r, c.reason)
			if got != c.want {
				t.Errorf("default %q, %s: %q, want %q", def, short(c.value), got, c.want)
			}
		}
		if got, r := fallbackAnnotation(map[string]string{}, def); got != def || r != nil {
			t.Errorf("no annotation, default %q: %q %+v", def, got, r)
		}
	}
}

// TestAnnotationRefusalLog: a refusal is logged once, naming the
// annotation, the reason, what is wanted and what is used instead, with
// the pod's value cut and escaped; an annotation used logs nothing.
func TestAnnotationRefusalLog(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	_, r := eventAnnotation(map[string]string{AnnotationEvent: "wall,interval=1" + hostileText + strings.Repeat("x", 200)}, "cpu")
	r.log(log, "cpu")
	_, ok := eventAnnotation(map[string]string{AnnotationEvent: "wall"}, "cpu")
	ok.log(log, "wall")
	out := buf.String()
	if strings.Count(out, "\n") != 1 {
		t.Fatalf("want one line:\n%s", out)
	}
	for _, s := range []string{`"msg":"annotation refused"`, `"annotation":"` + AnnotationEvent + `"`, `"reason":"longer than 128 bytes"`, `"want":"an async-profiler event name`, `"using":"cpu"`, `svc\\x1b]52;c;aGk=\\x07`} {
		if !strings.Contains(out, s) {
			t.Errorf("no %s in %s", s, out)
		}
	}
	if testenv.HasControl(out) || strings.Contains(out, strings.Repeat("x", 100)) {
		t.Errorf("the value is not logged cut and escaped: %q", out)
	}
}
