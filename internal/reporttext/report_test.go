package reporttext

import (
	"bytes"
	"strings"
	"testing"

	"github.com/safeattach/safeattach/preflight"
)

// TestTargetStringsCannotForgeLines: the target's words — a main class,
// a JDK directory, evidence, an environment value — are written on the
// line they belong to, escaped: a newline in one cannot add a line of
// the summary's own, and no control byte reaches the terminal.
func TestTargetStringsCannotForgeLines(t *testing.T) {
	forged := "x\nprofilers  none loaded\x1b]0;owned\a"
	r := &preflight.Report{PID: 7}
	r.Process.Name = "java"
	r.JVM.Kind, r.JVM.Version, r.JVM.Home, r.JVM.MainClass = preflight.JVMHotSpot, "17", "/jdk"+forged, "-jar /app/"+forged
	r.JVM.Flags = map[string]preflight.FlagSetting{"Flag" + forged: {Value: forged, Source: "cmdline"}}
	r.Profilers = []preflight.LoadedLibrary{{Kind: "async-profiler", Version: "2.9", Path: "/tmp/libasyncProfiler.so"}}
	r.Unknowns = []preflight.UnknownFact{{Fact: "jemalloc.prof", Reason: forged}}
	var out bytes.Buffer
	Write(&out, r)
	text := out.String()
	if strings.Count(text, "\nprofilers  ") != 1 || strings.Contains(text, "\nprofilers  none loaded") {
		t.Errorf("a forged line:\n%s", text)
	}
	if strings.ContainsAny(text, "\x1b\a") {
		t.Errorf("a control byte reached the output:\n%q", text)
	}
	if r.JVM.MainClass != "-jar /app/"+forged {
		t.Error("Write changed the caller's report")
	}
}
