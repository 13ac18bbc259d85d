package jfrpprof

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/safeattach/safeattach/internal/testenv"
)

// hot is the workload's busy method (Target.java, mode spin), as a Java
// programmer names it.
const hot = "Target.spin"

// checkFolded: the CPU samples of a JDK recording fold into stacks that
// count each of them once, root first, with the busy method on top of
// the collapsed, flat and HTML outputs.
func checkFolded(t *testing.T, data []byte, start, end time.Time) {
	ps, err := Convert(data, start, end)
	if err != nil {
		t.Fatal(err)
	}
	f := Fold(mustPick(t, ps, "cpu"))
	if f.Metric != "process_cpu" || f.Engine != EngineJFR {
		t.Errorf("metric %q, engine %q: want process_cpu from %q", f.Metric, f.Engine, EngineJFR)
	}
	// Every jdk.ExecutionSample is one sample, as the JDK's own jfr tool
	// counts them.
	if want := executionSamples(t, data); f.Total() != want {
		t.Errorf("the folded stacks hold %d samples; jfr summary counts %d", f.Total(), want)
	}

	var collapsed bytes.Buffer
	if err := f.WriteCollapsed(&collapsed); err != nil {
		t.Fatal(err)
	}
	size := collapsed.Len()
	var sum, hotSamples int64
	sc := bufio.NewScanner(&collapsed)
	for sc.Scan() {
		stack, count, ok := strings.Cut(sc.Text(), " ")
		n, err := strconv.ParseInt(count, 10, 64)
		if !ok || err != nil || n <= 0 || strings.Contains(stack, "/") {
			t.Fatalf("not a collapsed line of dotted Java frames: %q", sc.Text())
		}
		// The workload's stacks start at their thread's root; a thread the
		// VM entered Java from native code (the Attach Listener running a
		// diagnostic command) starts wherever it entered.
		frames := strings.Split(stack, ";")
		if strings.Contains(stack, "Target.") && frames[0] != "java.lang.Thread.run" && !strings.HasPrefix(frames[0], "Target") {
			t.Errorf("a stack of the workload does not start at its thread's root: %q", stack)
		}
		if frames[len(frames)-1] == hot {
			hotSamples += n
		}
		sum += n
	}
	if sum != f.Total() || hotSamples < sum/2 {
		t.Errorf("collapsed: %d samples (want %d), %d in %s:\n%s", sum, f.Total(), hotSamples, hot, collapsed.String())
	}

	var flat bytes.Buffer
	if err := f.WriteFlat(&flat, 5); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(flat.String()), "\n")
	if len(lines) < 4 || lines[0] != "# "+EngineJFR || !strings.HasSuffix(lines[3], "  "+hot) {
		t.Errorf("flat: the busy method is not the first under the heading:\n%s", flat.String())
	}

	var page bytes.Buffer
	if err := f.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	doc, err := html.Parse(bytes.NewReader(page.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var data2, title string
	for n := range doc.Descendants() {
		if n.Type == html.ElementNode && n.Data == "script" && n.FirstChild != nil && slices.Contains(n.Attr, html.Attribute{Key: "id", Val: "data"}) {
			data2 = n.FirstChild.Data
		}
		if n.Type == html.ElementNode && n.Data == "title" && n.FirstChild != nil {
			title = n.FirstChild.Data
		}
	}
	if !strings.Contains(data2, `"`+hot+`"`) || !strings.Contains(page.String(), EngineJFR) || !strings.HasPrefix(title, "process_cpu") {
		t.Errorf("the page's data lacks %s, or it does not say its engine (title %q)", hot, title)
	}
	t.Logf("%d samples in %d stacks; collapsed %d bytes, flat %d, html %d", f.Total(), len(f.Stacks), size, flat.Len(), page.Len())
}

// executionSamples counts the recording's jdk.ExecutionSample events
// with the JDK's jfr tool, which shares no code with the parser.
func executionSamples(t *testing.T, data []byte) int64 {
	t.Helper()
	file := filepath.Join(t.TempDir(), "rec.jfr")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(testenv.JDK17(t).Home, "bin", "jfr"), "summary", file).CombinedOutput()
	if err != nil {
		t.Fatalf("jfr summary: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "jdk.ExecutionSample" {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatalf("jfr summary: %q", line)
			}
			return n
		}
	}
	t.Fatalf("jfr summary counts no jdk.ExecutionSample:\n%s", out)
	return 0
}

// TestFoldAsyncProfiler: async-profiler's recordings say so, keep their
// native frames, and count wall samples, not the time they stand for.
func TestFoldAsyncProfiler(t *testing.T) {
	for _, c := range []struct {
		file, event string
		samples     int64
	}{
		// The totals the pprof profiles hold, divided by 10 ms a sample
		// (bounded's TestRealRecordings reads the same files).
		{testenv.RecordingCPUAllocLock, "cpu", 104},
		{testenv.RecordingWall, "wall", 504},
	} {
		ps, err := Convert(testenv.Recording(t, c.file), time.Now(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		f := Fold(mustPick(t, ps, c.event))
		if f.Engine != EngineAsyncProfiler || f.Total() != c.samples {
			t.Errorf("%s: engine %q, %d samples, want %q and %d", c.file, f.Engine, f.Total(), EngineAsyncProfiler, c.samples)
		}
		native := false
		for _, s := range f.Stacks {
			native = native || strings.HasPrefix(s.Frames[len(s.Frames)-1], "libc.so.6.")
			if strings.Contains(strings.Join(s.Frames, ";"), "Target.contend") && s.Frames[0] != "java.lang.Thread.run" {
				t.Errorf("%s: a stack is not root first: %q", c.file, s.Frames)
			}
		}
		if !native {
			t.Errorf("%s: no native frame in async-profiler's stacks", c.file)
		}
	}
}

func TestJavaName(t *testing.T) {
	for in, want := range map[string]string{
		"java/lang/Thread.run":             "java.lang.Thread.run",
		"Target.spin":                      "Target.spin",
		"libc.so.6.__futex_abstimed_wait":  "libc.so.6.__futex_abstimed_wait",
		".monitorenter Runtime1 stub":      ".monitorenter Runtime1 stub",
		"com/example/Outer$Inner.<init>":   "com.example.Outer$Inner.<init>",
		"libjvm.so.Runtime1::monitorenter": "libjvm.so.Runtime1::monitorenter",
		"no_dot/at_all":                    "no_dot/at_all",
	} {
		if got := javaName(in); got != want {
			t.Errorf("javaName(%q) = %q, want %q", in, got, want)
		}
	}
}
