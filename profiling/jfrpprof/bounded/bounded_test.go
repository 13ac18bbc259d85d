package bounded

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/safeattach/safeattach/internal/testenv"
)

// testLimits keep hostile recordings cheap in tests: 512 MiB is many
// times what the converter commits for these recordings (about 12 MiB).
var testLimits = Limits{Memory: 512 << 20, Time: 5 * time.Second}

func convert(t testing.TB, data []byte, event string, l Limits) (Result, []byte, error) {
	t.Helper()
	return convertTo(t, data, "", event, l)
}

func convertTo(t testing.TB, data []byte, format, event string, l Limits) (Result, []byte, error) {
	t.Helper()
	var out bytes.Buffer
	res, err := Convert(context.Background(), Request{
		Converter: testenv.Converter(t), Format: format, Event: event,
		Start: time.Unix(1700000000, 0), End: time.Unix(1700000001, 0),
		In: bytes.NewReader(data), Out: &out, Limits: l,
	})
	return res, out.Bytes(), err
}

// TestRealRecordings: async-profiler 4.5's recordings convert to the
// profile of the event asked for.
func TestRealRecordings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ file, event, metric string }{
		{testenv.RecordingCPUAllocLock, "cpu", "process_cpu"},
		{testenv.RecordingCPUAllocLock, "alloc", "memory"},
		{testenv.RecordingCPUAllocLock, "lock", "mutex"},
		{testenv.RecordingWall, "wall", "wall"},
	} {
		res, out, err := convert(t, testenv.Recording(t, tc.file), tc.event, testLimits)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.file, tc.event, err)
		}
		if res.Metric != tc.metric || res.Stacks == 0 || res.Total <= 0 || res.Type == "" || len(out) < 2 || out[0] != 0x1f || out[1] != 0x8b {
			t.Errorf("%s %s: %+v, %d bytes (want gzip)", tc.file, tc.event, res, len(out))
		}
	}
}

// checkReason: every failure says why, in words.
func checkReason(t testing.TB, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if !errors.Is(err, ErrFailed) {
		t.Fatalf("error %v does not unwrap to ErrFailed", err)
	}
	reason := strings.TrimSpace(strings.TrimPrefix(err.Error(), ErrFailed.Error()+":"))
	if len(reason) < 8 || strings.Contains(reason, ".go:") || strings.Contains(reason, "+0x") {
		t.Fatalf("a failure without a reason in words: %q", err)
	}
}

// mutate damages a recording as a target could: bytes flipped, runs
// overwritten with large varints, cut short or spliced.
func mutate(r *rand.Rand, data []byte) []byte {
	m := bytes.Clone(data)
	switch r.IntN(4) {
	case 0:
		for range 1 + r.IntN(8) {
			m[r.IntN(len(m))] ^= byte(1 + r.IntN(255))
		}
	case 1:
		i := r.IntN(len(m) - 5)
		copy(m[i:], []byte{0xff, 0xff, 0xff, 0xff, 0x7f})
	case 2:
		m = m[:r.IntN(len(m))]
	case 3:
		i, j := r.IntN(len(m)), r.IntN(len(m))
		m = append(m[:i:i], data[j:]...)
	}
	return m
}

// TestMutatedRecordingsAreBounded (the way back): damaged recordings
// made the converter run forever, grow without end, or die asking for
// 128 GiB at once. Bounded, each ends within its time limit with a
// profile or a reason, and the caller is never at risk.
func TestMutatedRecordingsAreBounded(t *testing.T) {
	t.Parallel()
	n := 120
	if s := os.Getenv("SAFEATTACH_MUTATIONS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	if testing.Short() {
		n = 30
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 17))
	base := testenv.Recording(t, testenv.RecordingCPUAllocLock)
	testenv.Converter(t) // built before the clock starts
	reasons := map[string]int{}
	var slowest time.Duration
	for i := range n {
		m := mutate(r, base)
		start := time.Now()
		_, _, err := convert(t, m, "cpu", testLimits)
		took := time.Since(start)
		slowest = max(slowest, took)
		if took > testLimits.Time+3*time.Second {
			t.Errorf("mutation %d took %v, past its %v limit", i, took, testLimits.Time)
		}
		checkReason(t, err)
		key := "converted"
		if err != nil {
			key = strings.TrimPrefix(err.Error(), ErrFailed.Error()+": ")
			if len(key) > 60 {
				key = key[:60]
			}
		}
		reasons[key]++
	}
	var lines []string
	for k, v := range reasons {
		lines = append(lines, fmt.Sprintf("%4d  %s", v, k))
	}
	sort.Strings(lines)
	t.Logf("%d mutated recordings, slowest %v:\n%s", n, slowest, strings.Join(lines, "\n"))
}

// TestLimitsHold: each limit is met with its own reason.
func TestLimitsHold(t *testing.T) {
	t.Parallel()
	rec := testenv.Recording(t, testenv.RecordingCPUAllocLock)
	_, _, err := convert(t, rec, "cpu", Limits{Input: 1000, Memory: testLimits.Memory, Time: testLimits.Time})
	if err == nil || !strings.Contains(err.Error(), "larger than 1000 bytes") {
		t.Errorf("input limit: %v", err)
	}
	_, _, err = convert(t, rec, "cpu", Limits{Output: 100, Memory: testLimits.Memory, Time: testLimits.Time})
	if err == nil || !strings.Contains(err.Error(), "grew past 100 bytes") {
		t.Errorf("output limit: %v", err)
	}
	// A recording that asks for more than the limit: the largest one the
	// input limit lets through, of one long varint-sized run.
	_, _, err = convert(t, rec, "cpu", Limits{Memory: 8 << 20, Time: testLimits.Time})
	checkReason(t, err)
	if err == nil {
		t.Error("8 MiB were enough to convert a recording")
	} else if !strings.Contains(err.Error(), "memory limit") {
		t.Errorf("memory limit: %v", err)
	}
	_, _, err = convert(t, []byte("not a recording"), "cpu", testLimits)
	if err == nil || !strings.Contains(err.Error(), "not a JFR recording") {
		t.Errorf("not JFR: %v", err)
	}
}

// FuzzConvert: any bytes give a profile or a reason, within the limits.
// Seeds: the real recordings (testdata/fuzz/FuzzConvert holds more).
func FuzzConvert(f *testing.F) {
	f.Add(testenv.Recording(f, testenv.RecordingCPUAllocLock))
	f.Add(testenv.Recording(f, testenv.RecordingWall))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _, err := convert(t, data, "cpu", testLimits)
		checkReason(t, err)
	})
}

// TestResultSays: what the CLI prints after -o pprof is the profile's
// total, not its number of stacks (it said "11 samples" of a file
// holding 86).
func TestResultSays(t *testing.T) {
	for _, c := range []struct {
		r    Result
		want string
	}{
		{Result{Metric: "process_cpu", Stacks: 4, Total: 1_040_000_000, Type: "cpu", Unit: "nanoseconds"}, "process_cpu: 1.04s of cpu in 4 distinct stacks"},
		{Result{Metric: "memory", Stacks: 2, Total: 237, Type: "alloc_in_new_tlab_objects", Unit: "count"}, "memory: 237 alloc_in_new_tlab_objects in 2 distinct stacks"},
	} {
		if got := c.r.String(); got != c.want {
			t.Errorf("%q, want %q", got, c.want)
		}
	}
}

// TestFormats: the converter writes each output asked for, under the
// same limits and with the same summary of what the profile holds; an
// output past its limit is refused in words that name it.
func TestFormats(t *testing.T) {
	t.Parallel()
	rec := testenv.Recording(t, testenv.RecordingCPUAllocLock)
	for _, c := range []struct{ format, starts, holds string }{
		{"collapsed", "java.lang.Thread.run;Target$$Lambda_.run;Target.contend", " 94\n"},
		{"flat=2", "# async-profiler's JFR output", "Target.contend\n"},
		{"html", "<!DOCTYPE html>", `"Target.contend"`},
	} {
		res, out, err := convertTo(t, rec, c.format, "cpu", testLimits)
		if err != nil {
			t.Fatalf("%s: %v", c.format, err)
		}
		if res.Metric != "process_cpu" || res.Total <= 0 || !strings.HasPrefix(string(out), c.starts) || !strings.Contains(string(out), c.holds) {
			t.Errorf("%s: %+v\n%.300s", c.format, res, out)
		}
	}
	_, _, err := convertTo(t, rec, "html", "cpu", Limits{Output: 2000, Memory: testLimits.Memory, Time: testLimits.Time})
	checkReason(t, err)
	if err == nil || !strings.Contains(err.Error(), "the flame graph grew past 2000 bytes") {
		t.Errorf("html past the output limit: %v", err)
	}
	_, _, err = convertTo(t, rec, "svg", "cpu", testLimits)
	checkReason(t, err)
	if err == nil || !strings.Contains(err.Error(), "one of pprof, collapsed, flat[=N], html") {
		t.Errorf("an unknown format: %v", err)
	}
}
